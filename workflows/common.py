"""Pieces the stage modules share: stage groups and the usual send times."""

from datetime import timedelta

from engine import wait, wait_until

# Customers who can use the product (not onboarding: they are still being set up).
ACTIVE_CUSTOMER_STAGES = ("engagement", "retention", "loyalty", "advocacy")
CUSTOMER_STAGES = ("onboarding", *ACTIVE_CUSTOMER_STAGES)


def later(days: float, *, at: str = "10:00", id: str) -> list:
    """About ``days`` later, on the next weekday morning in the contact's time zone: content
    that is not a reply to something the contact just did lands at a civil hour.

    The plain wait is an hour short of ``days`` so that an email sent at 10:00 is followed
    ``days`` later at 10:00, not a day after that (``wait_until`` means strictly later)."""
    return [
        wait(timedelta(days=days) - timedelta(hours=1), id=f"{id}_wait"),
        wait_until(at, weekdays_only=True, id=id),
    ]
