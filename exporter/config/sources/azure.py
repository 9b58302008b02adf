"""Settings of the Azure sources (`azure.retail`, `azure.cost_management`), with their own checks, and the
cloud they run in (`azure.cloud`), which both follow."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from exporter.config.errors import ConfigError
from exporter.config.model import BillingSettings, CloudSettings, Config, ShelfSettings
from exporter.config.sections import cloud_section, section

AZURE_SCOPE = re.compile(r"/subscriptions/[0-9A-Fa-f-]{36}(/resourceGroups/[-\w.()]+)?/?")
# Where commitments' unused rows are visible: a subscription, or a billing account (or its profile) for
# reservations and savings plans shared across subscriptions.
COMMITMENT_SCOPE = re.compile(
    r"/subscriptions/[0-9A-Fa-f-]{36}/?"
    r"|/providers/Microsoft\.Billing/billingAccounts/[-\w:.]+(/billingProfiles/[-\w:.]+)?/?",
    re.IGNORECASE,
)
COST_TYPES = ("AmortizedCost", "ActualCost")


@dataclass(frozen=True)
class AzureCloud:
    """Where one Azure cloud's Resource Manager and Entra ID answer, named as `az cloud list` names the
    clouds. Hosts from learn.microsoft.com, "National clouds" (Entra ID: login.microsoftonline.us,
    login.partner.microsoftonline.cn; azure-identity's AzureAuthorityHosts.AZURE_CHINA still names the older
    login.chinacloudapi.cn, which MSAL lists as deprecated) and the clouds' developer guides (Resource
    Manager: management.usgovcloudapi.net, management.chinacloudapi.cn)."""

    arm_endpoint: str
    authority_host: str

    @property
    def arm_scope(self) -> str:
        """The token scope for Resource Manager: its own endpoint is its audience, in every cloud."""
        return f"{self.arm_endpoint}/.default"


AZURE_CLOUDS = {
    "AzurePublicCloud": AzureCloud("https://management.azure.com", "login.microsoftonline.com"),
    "AzureUSGovernment": AzureCloud("https://management.usgovcloudapi.net", "login.microsoftonline.us"),
    "AzureChinaCloud": AzureCloud("https://management.chinacloudapi.cn", "login.partner.microsoftonline.cn"),
}


@cloud_section("azure")
@dataclass(frozen=True)
class AzureCloudSettings(CloudSettings):
    cloud: str = "AzurePublicCloud"  # or AzureUSGovernment, AzureChinaCloud: moves ARM and Entra ID

    def validate(self, config: Config) -> None:
        if self.cloud not in AZURE_CLOUDS:
            raise ConfigError("azure.cloud", f"must be one of {', '.join(AZURE_CLOUDS)}, got {self.cloud!r}")

    @property
    def endpoints(self) -> AzureCloud:
        return AZURE_CLOUDS[self.cloud]


def azure_cloud(clouds: Mapping[str, CloudSettings]) -> AzureCloudSettings:
    """The `azure.cloud` settings out of `Config.clouds` (or a source context's), the default when absent."""
    found = clouds.get("azure")
    return found if isinstance(found, AzureCloudSettings) else AzureCloudSettings()


@section("azure.retail")
@dataclass(frozen=True)
class AzureRetailSettings(ShelfSettings):
    """The Retail Prices API needs nothing beyond the common shelf settings (it takes no credentials).

    prices.azure.com is public and unauthenticated, and its items include Azure Government's regions
    (usgovvirginia, …), so it stays the endpoint in AzureUSGovernment. Azure China's retail prices are a
    CSV price sheet of their own (prices.azure.cn/api/retail/pricesheet/download, learn.microsoft.com
    "Azure Retail Prices API for China"), which this source does not read: enabling it with
    AzureChinaCloud is refused at start.
    """

    def validate(self, key: str, config: Config) -> None:
        super().validate(key, config)
        if self.enabled and azure_cloud(config.clouds).cloud == "AzureChinaCloud":
            raise ConfigError(
                f"{key}.enabled",
                "the Retail Prices API (prices.azure.com) has no Azure China prices, which are published "
                "as a CSV price sheet at prices.azure.cn; disable it and price China nodes from "
                "azure.cost_management, pricing.custom.file or pricing.offline.file",
            )


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
