"""multiprocessing: a method call on a ``BaseManager`` proxy of a registered object."""

from multiprocessing.managers import BaseManager

from _timing import check_add, emit, timed


class Service:
    def noop(self):
        pass

    def add(self, a, b):
        return a + b


class Manager(BaseManager):
    pass


Manager.register("Service", Service)


def main():
    with Manager() as manager:
        service = manager.Service()
        check_add(service.add)
        result = {"noop": timed(service.noop), "add": timed(service.add, 1, 2)}
    emit(result)


if __name__ == "__main__":
    main()
