"""The one sampling loop (rollouts/driver.py): the order it calls a process's parts in, and the three ways a
round or the rollout ends (no work left, the stop part, the end-of-round part)."""

from __future__ import annotations

from unmask.rollouts.driver import SamplerParts, drive, never


class Log:
    """A toy process whose parts log their calls: round 0 stops after its second step, round 1 runs out of
    work at its third, and ending round 1 ends the rollout (3 rounds planned)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.round = -1

    def start_round(self, k: int) -> int:
        self.round = k
        self.calls.append(("start", k))
        return 5

    def predict(self, i: int) -> tuple[int, int] | None:
        if self.round == 1 and i == 2:
            return None
        self.calls.append(("predict", i))
        return (self.round, i)

    def decide(self, step: tuple[int, int]) -> str:
        return f"choice{step}"

    def apply(self, step: tuple[int, int], choice: str) -> None:
        self.calls.append(("apply", step, choice))

    def record(self, step: tuple[int, int], choice: str) -> None:
        self.calls.append(("record", step))

    def stop(self, step: tuple[int, int], choice: str) -> bool:
        return step == (0, 1)

    def end_round(self, k: int) -> bool:
        self.calls.append(("end", k))
        return k == 1

    def parts(self, stop=None) -> SamplerParts:
        return SamplerParts(rounds=3, start_round=self.start_round, predict=self.predict, decide=self.decide,
                            apply=self.apply, record=self.record, stop=stop or self.stop, end_round=self.end_round)


def test_parts_run_in_order_and_each_way_of_ending_ends_what_it_should() -> None:
    log, advanced = Log(), []
    drive(log.parts(), lambda: advanced.append(len(log.calls)))
    step = lambda k, i: [("predict", i), ("apply", (k, i), f"choice{(k, i)}"), ("record", (k, i))]  # noqa: E731
    assert log.calls == [("start", 0), *step(0, 0), *step(0, 1), ("end", 0),
                         ("start", 1), *step(1, 0), *step(1, 1), ("end", 1)]  # fmt: skip
    assert len(advanced) == 4 and all(log.calls[n - 1][0] == "record" for n in advanced)  # after each step


def test_without_a_stop_a_round_runs_its_budget() -> None:
    log = Log()
    drive(log.parts(stop=never))
    first = log.calls[: log.calls.index(("end", 0))]
    assert [call for call in first if call[0] == "predict"] == [("predict", i) for i in range(5)]
