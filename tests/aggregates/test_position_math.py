"""Average-cost accounting: exact to the yen whatever the sequence of fills."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aggregates.position import _apply

fills = st.lists(st.tuples(st.integers(-10, 10).filter(bool).map(lambda lots: lots * 100),
                           st.integers(1, 50_000)), min_size=1, max_size=30)


@given(fills)
def test_cost_and_realised_account_for_every_yen(trades: list[tuple[int, int]]) -> None:
    qty = cost = realised = paid = 0
    for dq, price_yen in trades:
        dcash = dq * price_yen  # + paid for buys, - received for sells
        qty, cost, r = _apply(qty, cost, dq, dcash)
        realised += r
        paid += dcash
        if qty == 0:
            assert cost == 0  # a flat position carries no cost
        else:
            assert (cost > 0) == (qty > 0)  # a long costs money, a short received it
    assert qty == sum(dq for dq, _ in trades)
    assert cost - realised == paid  # nothing created or lost


def test_hand_computed_round_trips() -> None:
    assert _apply(0, 0, 300, 300_000) == (300, 300_000, 0)
    # sell a third of 300 bought at 1000: cost 100,000 removed, 20,000 gained
    assert _apply(300, 300_000, -100, -120_000) == (200, 200_000, 20_000)
    # cover a short of 200 received at 1,100 by buying at 1,000: 20,000 gained
    assert _apply(-200, -220_000, 200, 200_000) == (0, 0, 20_000)
    # long 100 at 1,000 flips to short 100 by selling 200 at 900
    assert _apply(100, 100_000, -200, -180_000) == (-100, -90_000, -10_000)
    # a third of 100,001 yen of cost is not whole: the remainder stays with what is held
    assert _apply(300, 100_001, -100, -40_000) == (200, 66_668, 6_667)
