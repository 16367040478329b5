"""The master's ``__main__`` in twins, masters without a main file, and twin output.

Each test runs a small master program in a subprocess (with a timeout) and checks
what it printed.
"""

import os
import textwrap

import procutil
import twinhelpers
from cpy2py import kernel_state

MAIN_SCRIPT = textwrap.dedent(
    '''
    import os
    import sys

    from cpy2py import TwinMaster, kernel_state

    print("top-level ran in", kernel_state.TWIN_ID, flush=True)


    class Point(object):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def moved(self, dx):
            return Point(self.x + dx, self.y)


    class ScriptError(Exception):
        pass


    def where_and_move(point, dx):
        return kernel_state.TWIN_ID, os.getpid(), point.moved(dx)


    def make_points(n):
        return [Point(i, -i) for i in range(n)]


    def fail(message):
        raise ScriptError(message)


    def twin_argv():
        return list(sys.argv)


    if __name__ == "__main__":
        print("main block ran in", kernel_state.TWIN_ID, flush=True)
        twin = TwinMaster(executable=sys.argv[1], twinterpreter_id="script-twin")
        with twin:
            twin_id, pid, moved = twin.execute(where_and_move, Point(1, 2), 10)
            assert twin_id == "script-twin", twin_id
            assert pid == twin.pid != os.getpid(), (pid, twin.pid)
            assert type(moved) is Point, type(moved)
            assert (moved.x, moved.y) == (11, 2)
            points = twin.execute(make_points, 3)
            assert [type(p) for p in points] == [Point] * 3
            assert [(p.x, p.y) for p in points] == [(0, 0), (1, -1), (2, -2)]
            built = twin.execute(Point, 5, 6)
            assert type(built) is Point and built.x == 5
            try:
                twin.execute(fail, "from the script")
            except ScriptError as error:
                assert str(error) == "from the script"
                assert "fail" in str(error.__cause__)
            else:
                raise AssertionError("no ScriptError")
            assert twin.execute(twin_argv) != sys.argv
        with TwinMaster(executable=sys.argv[1], twinterpreter_id="argv-twin", restore_argv=True) as twin:
            assert twin.execute(twin_argv) == sys.argv, twin.execute(twin_argv)
        print("SCRIPT OK", flush=True)
    '''
)


def check_main_script_output(process):
    assert process.returncode == 0, process.stdout + process.stderr
    lines = process.stdout.splitlines()
    assert "SCRIPT OK" in lines, process.stdout + process.stderr
    master_id = kernel_state.MASTER_ID
    assert lines.count("top-level ran in %s" % master_id) == 1, process.stdout
    assert lines.count("top-level ran in script-twin") == 1, process.stdout
    # the main block runs in the master only
    assert [line for line in lines if line.startswith("main block ran in")] == [
        "main block ran in %s" % master_id
    ], process.stdout


def test_functions_and_classes_of_a_main_script(twin_exe, tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(MAIN_SCRIPT)
    process = procutil.run_python([str(script), twin_exe], cwd=str(tmp_path))
    check_main_script_output(process)


def test_main_script_started_from_another_directory(twin_exe, tmp_path):
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "main_script.py"
    script.write_text(MAIN_SCRIPT)
    process = procutil.run_python([str(script), twin_exe], cwd="/")
    check_main_script_output(process)


def test_main_module_run_with_dash_m(twin_exe, tmp_path):
    package = tmp_path / "scriptpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("OFFSET = 0\n")
    (package / "main_module.py").write_text("from . import helper\n" + MAIN_SCRIPT)
    process = procutil.run_python(["-m", "scriptpkg.main_module", twin_exe], cwd=str(tmp_path))
    check_main_script_output(process)


RUN_MAIN_SCRIPT = textwrap.dedent(
    '''
    import sys

    from cpy2py import TwinMaster, kernel_state

    RAN = []


    def ran():
        return RAN


    if __name__ == "__main__":
        RAN.append(kernel_state.TWIN_ID)
        print("main block ran in", kernel_state.TWIN_ID, flush=True)
        if kernel_state.is_master():
            with TwinMaster(executable=sys.argv[1], twinterpreter_id="run-main", run_main=True) as twin:
                print("twin ran its main block:", twin.execute(ran), flush=True)
    '''
)


def test_run_main_runs_the_main_block_in_the_twin(twin_exe, tmp_path):
    script = tmp_path / "run_main_script.py"
    script.write_text(RUN_MAIN_SCRIPT)
    process = procutil.run_python([str(script), twin_exe], cwd=str(tmp_path))
    assert process.returncode == 0, process.stdout + process.stderr
    lines = process.stdout.splitlines()
    assert "twin ran its main block: ['run-main']" in lines, process.stdout + process.stderr
    assert "main block ran in run-main" in lines


NO_MAIN_FILE = textwrap.dedent(
    '''
    import os
    import platform
    import sys

    from cpy2py import TwinMaster

    with TwinMaster(executable=sys.argv[1], twinterpreter_id="no-main-file") as twin:
        print("IMPLEMENTATION", twin.execute(platform.python_implementation))
        print("OTHER PROCESS", twin.execute(os.getpid) != os.getpid())

        def defined_without_a_file():
            return 1

        try:
            twin.execute(defined_without_a_file)
        except ImportError as error:
            print("MAIN UNAVAILABLE", type(error).__name__, error)
    print("DONE")
    '''
)


def check_no_main_file_output(process, flavour):
    assert process.returncode == 0, process.stdout + process.stderr
    lines = process.stdout.splitlines()
    assert "IMPLEMENTATION %s" % twinhelpers.IMPLEMENTATIONS[flavour] in lines, process.stdout + process.stderr
    assert "OTHER PROCESS True" in lines
    assert "DONE" in lines
    unavailable = [line for line in lines if line.startswith("MAIN UNAVAILABLE")]
    assert len(unavailable) == 1 and "__main__" in unavailable[0], process.stdout


def test_master_run_with_dash_c(flavour, twin_exe, tmp_path):
    process = procutil.run_python(["-c", NO_MAIN_FILE, twin_exe], cwd=str(tmp_path))
    check_no_main_file_output(process, flavour)


def test_master_reading_its_program_from_stdin(flavour, twin_exe, tmp_path):
    process = procutil.run_python(["-", twin_exe], input=NO_MAIN_FILE, cwd=str(tmp_path))
    check_no_main_file_output(process, flavour)


PRINT_SCRIPT = textwrap.dedent(
    '''
    import sys

    from cpy2py import TwinMaster


    def shout(text):
        print(text + " on stdout")
        print(text + " on stderr", file=sys.stderr)


    if __name__ == "__main__":
        twin = TwinMaster(executable=sys.argv[1], twinterpreter_id="printer")
        twin.start()
        twin.execute(print, "flushed line from the twin", flush=True)
        twin.execute(shout, "unflushed line from the twin")
        twin.stop()
        print("master done", flush=True)
    '''
)


def test_twin_output_reaches_the_masters_stdout_and_stderr(twin_exe, tmp_path):
    script = tmp_path / "print_script.py"
    script.write_text(PRINT_SCRIPT)
    process = procutil.run_python([str(script), twin_exe], cwd=str(tmp_path))
    assert process.returncode == 0, process.stdout + process.stderr
    stdout_lines = process.stdout.splitlines()
    assert "flushed line from the twin" in stdout_lines, process.stdout + process.stderr
    # print() without flush into a pipe is buffered: the twin flushes when it stops
    assert "unflushed line from the twin on stdout" in stdout_lines, process.stdout + process.stderr
    assert "unflushed line from the twin on stderr" in process.stderr.splitlines()
    assert stdout_lines[-1] == "master done"


def test_master_exit_without_stop_leaves_no_twin(twin_exe, tmp_path):
    script = tmp_path / "no_stop.py"
    script.write_text(
        textwrap.dedent(
            '''
            import sys
            from cpy2py import TwinMaster
            twin = TwinMaster(executable=sys.argv[1], twinterpreter_id="left-running")
            twin.start()
            print("TWIN PID", twin.pid, flush=True)
            '''
        )
    )
    process = procutil.run_python([str(script), twin_exe], cwd=str(tmp_path))
    assert process.returncode == 0, process.stdout + process.stderr
    pid = int(process.stdout.split("TWIN PID", 1)[1].split()[0])

    def gone():
        try:
            with open("/proc/%d/stat" % pid) as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state in ("Z", "X")  # a zombie of init's: ended

    assert procutil.wait_until(gone, timeout=10), "twin %d outlived its master" % pid


LOGGING_SCRIPT = textwrap.dedent(
    '''
    import sys
    from cpy2py import TwinMaster
    with TwinMaster(executable=sys.argv[1], twinterpreter_id="logged") as twin:
        twin.execute(len, "abc")
    print("DONE", flush=True)
    '''
)


def run_logging_script(twin_exe, tmp_path, debug):
    env = dict(os.environ)
    env.pop("CPY2PY_DEBUG", None)
    if debug is not None:
        env["CPY2PY_DEBUG"] = debug
    process = procutil.run_python(["-c", LOGGING_SCRIPT, twin_exe], cwd=str(tmp_path), env=env)
    assert process.returncode == 0, process.stdout + process.stderr
    assert process.stdout.splitlines() == ["DONE"]
    return process.stderr


def test_cpy2py_debug_logs_to_stderr(twin_exe, tmp_path):
    quiet = run_logging_script(twin_exe, tmp_path, None)
    assert "__cpy2py__" not in quiet, quiet
    debug = run_logging_script(twin_exe, tmp_path, "1")
    assert "__cpy2py__.master" in debug, debug
    assert "__cpy2py__.twin" in debug, debug  # the twin inherits the setting
    info = run_logging_script(twin_exe, tmp_path, "INFO")
    assert "INFO" in info and "logged" in info, info
    assert "DEBUG" not in info, info
    assert "WARNING" not in debug and "ERROR" not in debug, debug
