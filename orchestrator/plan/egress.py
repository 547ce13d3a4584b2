"""What moving the bytes out costs: AWS's published internet egress tiers.

Figures: AWS "Data Transfer OUT From Amazon EC2 To Internet" (the tiers S3,
RDS, EBS direct APIs and DynamoDB share, aggregated over the account), as
published for US East (N. Virginia) and checked 2026-11 (unchanged since the
free allowance was raised to 100 GB a month in December 2021):

- the first 100 GB a month: free (across services and regions)
- up to 10 TB a month: $0.09 per GB
- the next 40 TB: $0.085 per GB
- the next 100 TB: $0.07 per GB
- above 150 TB: $0.05 per GB

Other regions charge more (up to about $0.15 per GB). Since 2024-03-05 AWS
waives these charges for data moved out when leaving AWS, on request to AWS
Support before the move: the plan says so next to the figure. GB here is
10^9 bytes, as AWS bills it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: When the figures below were checked against AWS's pricing page.
PRICES_CHECKED = "2026-11"
REGION = "us-east-1"
GB = 1000**3
FREE_GB = 100.0
#: (GB in the tier, USD per GB), in order; the last tier has no end.
TIERS: tuple[tuple[float, float], ...] = (
    (10_000.0 - FREE_GB, 0.09),
    (40_000.0, 0.085),
    (100_000.0, 0.07),
    (float("inf"), 0.05),
)
EXIT_WAIVER = (
    "AWS waives internet egress charges for customers leaving AWS (since 2024-03-05), "
    "on request to AWS Support before the move"
)


@dataclass(frozen=True)
class EgressCost:
    bytes: int
    usd: float
    #: The tiers, the region and the date of the figures, for the plan.
    basis: str
    waiver: str = EXIT_WAIVER


def egress_cost(nbytes: int, already_this_month_gb: float = 0.0) -> EgressCost:
    """The list price of sending ``nbytes`` to the internet, on top of
    ``already_this_month_gb`` already sent this month (0: the free 100 GB apply)."""
    gb = nbytes / GB
    start = already_this_month_gb
    usd = 0.0
    free_left = max(0.0, FREE_GB - start)
    billable = max(0.0, gb - free_left)
    position = max(0.0, start - FREE_GB)  # GB already billed this month
    for size, price in TIERS:
        if billable <= 0:
            break
        room = max(0.0, size - position)
        position = max(0.0, position - size)
        take = min(billable, room)
        usd += take * price
        billable -= take
    return EgressCost(
        bytes=nbytes,
        usd=round(usd, 2),
        basis=(
            f"AWS internet egress list prices, {REGION}, checked {PRICES_CHECKED}: first "
            "100 GB/month free, then $0.09/GB to 10 TB, $0.085/GB next 40 TB, "
            "$0.07/GB next 100 TB, $0.05/GB beyond"
        ),
    )
