"""Settings of the Azure sources (`azure.retail`, `azure.cost_management`), with their own checks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from exporter.config.errors import ConfigError
from exporter.config.model import BillingSettings, Config, ShelfSettings
from exporter.config.sections import section

AZURE_SCOPE = re.compile(r"/subscriptions/[0-9A-Fa-f-]{36}(/resourceGroups/[-\w.()]+)?/?")
# Where commitments' unused rows are visible: a subscription, or a billing account (or its profile) for
# reservations and savings plans shared across subscriptions.
COMMITMENT_SCOPE = re.compile(
    r"/subscriptions/[0-9A-Fa-f-]{36}/?"
    r"|/providers/Microsoft\.Billing/billingAccounts/[-\w:.]+(/billingProfiles/[-\w:.]+)?/?",
    re.IGNORECASE,
)
COST_TYPES = ("AmortizedCost", "ActualCost")


@section("azure.retail")
@dataclass(frozen=True)
class AzureRetailSettings(ShelfSettings):
    """The Retail Prices API needs nothing beyond the common shelf settings (it takes no credentials)."""


@section("azure.cost_management")
@dataclass(frozen=True)
class AzureCostSettings(BillingSettings):
    scope: str = ""  # /subscriptions/<id>, or the AKS node resource group …/resourceGroups/MC_…
    cost_type: str = "AmortizedCost"  # or ActualCost
    # Where reservations and savings plans are read (their UnusedReservation / UnusedSavingsPlan rows have
    # no resource group): empty = the subscription of `scope`; or a billing account for shared ones.
    commitment_scope: str = ""
    # Deprecated and ignored: scale sets are priced from the bill's own instance-hours (UsageQuantity), not
    # from the hours the exporter observed. Still accepted so existing configs load; the source logs one
    # WARNING when it is set to anything but 12. To be removed in the next release.
    min_observed_hours: int = 12

    def validate(self, key: str, config: Config) -> None:
        super().validate(key, config)
        if not self.enabled:
            return
        if not AZURE_SCOPE.fullmatch(self.scope):
            raise ConfigError(
                f"{key}.scope",
                "must be /subscriptions/<id> or /subscriptions/<id>/resourceGroups/<name>, "
                f"got {self.scope!r}",
            )
        if self.commitment_scope and not COMMITMENT_SCOPE.fullmatch(self.commitment_scope):
            raise ConfigError(
                f"{key}.commitment_scope",
                "must be empty (the subscription of scope), /subscriptions/<id> or "
                f"/providers/Microsoft.Billing/billingAccounts/<id>, got {self.commitment_scope!r}",
            )
        if self.cost_type not in COST_TYPES:
            raise ConfigError(f"{key}.cost_type", f"must be one of {', '.join(COST_TYPES)}")
