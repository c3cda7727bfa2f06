"""The stage model: the default buyer + customer journey, marketing-qualified at 20 points."""

from engine import lifecycle_journey

MQL_THRESHOLD = 20

JOURNEY = lifecycle_journey(mql_threshold=MQL_THRESHOLD)
