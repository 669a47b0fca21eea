from liveport.model.clock import ManualClock
from liveport.northd.liveness import Liveness


def test_a_chassis_is_alive_while_its_heartbeat_moves() -> None:
    clock = ManualClock()
    live = Liveness(clock, dead_after=10)
    live.observe({"hv1": 5, "hv2": 7})
    assert live.alive() == {"hv1", "hv2"}
    assert live.next_change() == 10
    clock.advance(6)
    live.observe({"hv1": 6, "hv2": 7})  # hv2 did not beat
    clock.advance(4.5)
    assert live.alive() == {"hv1"}
    assert live.next_change() == 5.5  # hv1 beat 4.5 s ago
    live.observe({"hv1": 6, "hv2": 8})  # hv2 is back
    assert live.alive() == {"hv1", "hv2"}
    live.observe({"hv1": 6})  # hv2 unregistered
    assert live.alive() == {"hv1"}
    clock.advance(100)
    assert live.alive() == frozenset() and live.next_change() is None
