"""multiprocessing: ``ProcessPoolExecutor(max_workers=1).submit(f).result()``."""

from concurrent.futures import ProcessPoolExecutor

from _timing import add, check_add, emit, noop, timed


def main():
    with ProcessPoolExecutor(max_workers=1) as pool:
        check_add(lambda a, b: pool.submit(add, a, b).result())
        result = {
            "noop": timed(lambda: pool.submit(noop).result()),
            "add": timed(lambda: pool.submit(add, 1, 2).result()),
        }
    emit(result)


if __name__ == "__main__":
    main()
