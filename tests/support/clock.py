"""A clock tests move by hand (as Kueue injects one): time passes only when a test says so."""


class ManualClock:
    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
