"""A small hand-written universe, so tradecore runs with no market data installed.

Names, TSE 33-sector codes and scale categories are written from general knowledge;
reference prices are rounded, approximate yen levels (around 2025) used as base prices
for the daily limits. They are illustrative, not market data: do not trade on them.
12 TOPIX Core30 stocks and 2 Mid400 ones, so both tick tables are exercised.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class BundledStock(NamedTuple):
    code: str  # 5-digit J-Quants code
    name: str
    sector33: str
    scale_category: str
    reference_price_yen: int

    @property
    def last_close(self) -> int:
        """The base price for the day's limits (what a listing's last close is)."""
        return self.reference_price_yen


BUNDLED_STOCKS: Final[tuple[BundledStock, ...]] = (
    BundledStock("72030", "Toyota Motor", "3700", "TOPIX Core30", 2_800),
    BundledStock("67580", "Sony Group", "3650", "TOPIX Core30", 3_500),
    BundledStock("99840", "SoftBank Group", "5250", "TOPIX Core30", 9_000),
    BundledStock("83060", "Mitsubishi UFJ Financial Group", "7050", "TOPIX Core30", 1_900),
    BundledStock("68610", "Keyence", "3650", "TOPIX Core30", 60_000),
    BundledStock("94320", "Nippon Telegraph and Telephone", "5250", "TOPIX Core30", 150),
    BundledStock("40630", "Shin-Etsu Chemical", "3200", "TOPIX Core30", 5_000),
    BundledStock("80350", "Tokyo Electron", "3650", "TOPIX Core30", 25_000),
    BundledStock("65010", "Hitachi", "3650", "TOPIX Core30", 3_800),
    BundledStock("79740", "Nintendo", "3800", "TOPIX Core30", 10_000),
    BundledStock("45020", "Takeda Pharmaceutical", "3250", "TOPIX Core30", 4_200),
    BundledStock("99830", "Fast Retailing", "6100", "TOPIX Core30", 48_000),
    BundledStock("79510", "Yamaha", "3800", "TOPIX Mid400", 1_100),
    BundledStock("31970", "Skylark Holdings", "6100", "TOPIX Mid400", 2_900),
)
