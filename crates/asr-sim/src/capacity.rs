//! Compute capacity: the VM sizes the simulator knows (family, vCPUs), per-region vCPU quotas
//! and size restrictions, and the two Compute reads that show them — `locations/{l}/usages`
//! and `skus` — so a failover's 28031 follows from the quota rather than from dice.
//!
//! Shapes: Compute REST "Usage - List" (`value[]` of `{unit: "Count", currentValue, limit,
//! name: {value, localizedValue}}`, learn.microsoft.com/rest/api/compute/usage/list) and
//! "Resource Skus - List" (`value[]` of `{resourceType, name, tier, size, family, locations,
//! capabilities[{name, value}], restrictions[{type, values, restrictionInfo: {locations},
//! reasonCode}]}`, learn.microsoft.com/rest/api/compute/resource-skus/list; the reason codes
//! `QuotaId` / `NotAvailableForSubscription` are the spec's enum). Quota is counted in vCPUs
//! per family and in total (`cores`, "Total Regional vCPUs"), and deallocated VMs do not count
//! (learn.microsoft.com/azure/virtual-machines/quotas: "vCPU quotas … are enforced for
//! running VMs and VM allocations"; stopped-deallocated VMs hold no allocation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One VM size: Compute's SKU name, its quota family and vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSize {
    /// e.g. `Standard_D2s_v3`.
    pub name: &'static str,
    /// e.g. `standardDSv3Family` (the SKU's `family`, and the usage's `name.value`).
    pub family: &'static str,
    /// The family's display name in usages (`name.localizedValue`).
    pub family_display: &'static str,
    /// `capabilities[vCPUs]`.
    pub vcpus: u32,
}

/// The sizes the simulator serves: the one its seeded VMs use (`Standard_D2s_v3`, the
/// `hardwareProfile.vmSize` and `recoveryAzureVMSize` of every seeded item) and its neighbours
/// in the same and another family, so tests can mix families. Values as Compute lists them.
pub const SIZES: &[VmSize] = &[
    VmSize {
        name: "Standard_D2s_v3",
        family: "standardDSv3Family",
        family_display: "Standard DSv3 Family vCPUs",
        vcpus: 2,
    },
    VmSize {
        name: "Standard_D4s_v3",
        family: "standardDSv3Family",
        family_display: "Standard DSv3 Family vCPUs",
        vcpus: 4,
    },
    VmSize {
        name: "Standard_D8s_v3",
        family: "standardDSv3Family",
        family_display: "Standard DSv3 Family vCPUs",
        vcpus: 8,
    },
    VmSize { name: "Standard_B2s", family: "standardBSFamily", family_display: "Standard BS Family vCPUs", vcpus: 2 },
    VmSize {
        name: "Standard_E4s_v3",
        family: "standardESv3Family",
        family_display: "Standard ESv3 Family vCPUs",
        vcpus: 4,
    },
];

/// The usage name of the regional total.
pub const TOTAL: &str = "cores";

/// A size the simulator knows, by name (case-insensitive, as Compute compares sizes).
pub fn size(name: &str) -> Option<&'static VmSize> {
    SIZES.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// A vCPU limit in a region: for a family, or the regional total (`cores`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// Azure location, e.g. `eastus`.
    pub region: String,
    /// A family (`standardDSv3Family`) or `cores`.
    pub family: String,
    /// vCPUs.
    pub limit: u64,
}

/// A size not offered to the subscription in a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuRestriction {
    /// Azure location.
    pub region: String,
    /// VM size, e.g. `Standard_D2s_v3`.
    pub size: String,
}

/// Quotas and restrictions. Defaults are generous so a fleet fits: every family and the
/// regional total allow `default_limit` vCPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    /// The limit of any family or total not named in `quotas`.
    pub default_limit: u64,
    /// Limits per region and family (or `cores`), for every subscription.
    pub quotas: Vec<QuotaRule>,
    /// Sizes restricted (`NotAvailableForSubscription`) per region.
    pub restricted: Vec<SkuRestriction>,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self { default_limit: 1_000_000, quotas: Vec::new(), restricted: Vec::new() }
    }
}

impl CapacityConfig {
    /// The limit of `family` (or `cores`) in `region`; a later rule wins.
    pub fn limit(&self, region: &str, family: &str) -> u64 {
        self.quotas
            .iter()
            .rev()
            .find(|q| q.region.eq_ignore_ascii_case(region) && q.family.eq_ignore_ascii_case(family))
            .map_or(self.default_limit, |q| q.limit)
    }

    /// Sets one limit, replacing an earlier rule for the same region and family.
    pub fn set_limit(&mut self, region: &str, family: &str, limit: u64) {
        self.quotas.retain(|q| !(q.region.eq_ignore_ascii_case(region) && q.family.eq_ignore_ascii_case(family)));
        self.quotas.push(QuotaRule { region: region.to_ascii_lowercase(), family: family.to_owned(), limit });
    }

    /// Whether any quota or restriction is set: without one, every failover fits.
    pub fn constrained(&self) -> bool {
        !self.quotas.is_empty() || !self.restricted.is_empty() || self.default_limit < Self::default().default_limit
    }

    /// Whether `size` is restricted in `region`.
    pub fn restricted(&self, region: &str, size: &str) -> bool {
        self.restricted.iter().any(|r| r.region.eq_ignore_ascii_case(region) && r.size.eq_ignore_ascii_case(size))
    }

    /// Why a VM of `size` cannot be created in `region` where `in_use` vCPUs (per family and
    /// `cores`) are already allocated: Compute's own wording (a size not offered →
    /// `SkuNotAvailable`; a quota exceeded → `QuotaExceeded`, "Operation could not be completed
    /// as it results in exceeding approved … quota. Additional details - Deployment Model:
    /// Resource Manager, Location: …, Current Limit: …, Current Usage: …, Additional Required: …,
    /// (Minimum) New Limit Required: …", as quoted in mspnp/aks-baseline#377). `None`: it fits.
    /// A size the simulator does not know is not created either (stingier than Azure).
    pub fn refusal(&self, region: &str, size_name: &str, in_use: &BTreeMap<String, u64>) -> Option<String> {
        let Some(s) = size(size_name) else {
            return Some(format!(
                "The requested size '{size_name}' is currently not available in location '{region}' for this subscription."
            ));
        };
        if self.restricted(region, s.name) {
            return Some(format!(
                "The requested size '{}' is currently not available in location '{region}' for this subscription.",
                s.name
            ));
        }
        for family in [s.family, TOTAL] {
            let used = in_use.get(&family.to_ascii_lowercase()).copied().unwrap_or(0);
            let limit = self.limit(region, family);
            let need = u64::from(s.vcpus);
            if used + need > limit {
                return Some(format!(
                    "Operation could not be completed as it results in exceeding approved {family} Cores quota. \
                     Additional details - Deployment Model: Resource Manager, Location: {region}, Current Limit: {limit}, \
                     Current Usage: {used}, Additional Required: {need}, (Minimum) New Limit Required: {}.",
                    used + need
                ));
            }
        }
        None
    }

    /// `GET …/locations/{region}/usages`: the total and every family the catalogue knows.
    /// `in_use`: allocated vCPUs by lowercase family and `cores`.
    pub fn usages(&self, region: &str, in_use: &BTreeMap<String, u64>) -> Value {
        let mut families: Vec<(&str, &str)> = vec![(TOTAL, "Total Regional vCPUs")];
        for s in SIZES {
            if !families.iter().any(|(f, _)| *f == s.family) {
                families.push((s.family, s.family_display));
            }
        }
        let value: Vec<Value> = families
            .into_iter()
            .map(|(family, display)| {
                json!({"limit": self.limit(region, family), "unit": "Count",
                    "currentValue": in_use.get(&family.to_ascii_lowercase()).copied().unwrap_or(0),
                    "name": {"value": family, "localizedValue": display}})
            })
            .collect();
        json!({"value": value})
    }

    /// `GET …/providers/Microsoft.Compute/skus?$filter=location eq '{region}'`: the catalogue's
    /// sizes in `region` (every region the subscription asks for has them), each restricted one
    /// with a `Location` restriction `NotAvailableForSubscription`.
    pub fn skus(&self, region: &str) -> Value {
        let value: Vec<Value> = SIZES
            .iter()
            .map(|s| {
                let restrictions: Vec<Value> = if self.restricted(region, s.name) {
                    vec![json!({"type": "Location", "values": [region],
                        "restrictionInfo": {"locations": [region]}, "reasonCode": "NotAvailableForSubscription"})]
                } else {
                    vec![]
                };
                let tier_size = s.name.split_once('_').map_or(s.name, |(_, rest)| rest);
                json!({"resourceType": "virtualMachines", "name": s.name, "tier": "Standard", "size": tier_size,
                    "family": s.family, "locations": [region],
                    "locationInfo": [{"location": region, "zones": [], "zoneDetails": []}],
                    "capabilities": [{"name": "vCPUs", "value": s.vcpus.to_string()},
                        {"name": "vCPUsAvailable", "value": s.vcpus.to_string()}],
                    "restrictions": restrictions})
            })
            .collect();
        json!({"value": value})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_fits_until_its_family_or_the_total_runs_out() {
        let mut c = CapacityConfig::default();
        c.set_limit("eastus", "standardDSv3Family", 6);
        let used = |f: u64, t: u64| BTreeMap::from([("standarddsv3family".to_owned(), f), ("cores".to_owned(), t)]);
        assert_eq!(c.refusal("eastus", "Standard_D2s_v3", &used(4, 4)), None);
        let why = c.refusal("eastus", "Standard_D4s_v3", &used(4, 4)).expect("over the family quota");
        assert!(why.contains("standardDSv3Family") && why.contains("Current Limit: 6"), "{why}");
        assert_eq!(c.refusal("westus", "Standard_D4s_v3", &used(4, 4)), None, "quotas are per region");
        c.set_limit("westus", "cores", 5);
        assert!(c.refusal("westus", "Standard_D2s_v3", &used(4, 4)).expect("over the total").contains("cores"));
        c.restricted.push(SkuRestriction { region: "westus".into(), size: "Standard_B2s".into() });
        assert!(c.refusal("westus", "standard_b2s", &BTreeMap::new()).is_some());
        assert_eq!(c.skus("westus")["value"][3]["restrictions"][0]["reasonCode"], "NotAvailableForSubscription");
        assert_eq!(c.usages("eastus", &used(4, 4))["value"][1]["limit"], 6);
    }
}
