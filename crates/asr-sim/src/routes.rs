//! ARM paths → routes. Segments are compared case-insensitively, as ARM does.

/// A recognised ARM path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Vault,
    Fabrics,
    Fabric(String),
    AllContainers,
    Containers(String),
    Container(String, String),
    AllMappings,
    Mappings(String, String),
    Mapping(String, String, String),
    SwitchProtection(String, String),
    ContainerOperationResult(String, String, String),
    VaultItems,
    Items(String, String),
    Item(String, String, String),
    ItemAction(String, String, String, String),
    ItemOperationResult(String, String, String, String),
    Points(String, String, String),
    Point(String, String, String, String),
    Policies,
    Policy(String),
    Jobs,
    Job(String),
    JobAction(String, String),
    OperationStatus(String),
    Plans,
    Plan(String),
    PlanAction(String, String),
    PlanOperationResult(String, String),
    Vms(String),
    Vm(String, String),
    VmInstanceView(String, String),
    Nics(String),
    Nic(String, String),
    Disks(String),
    Disk(String, String),
    PublicIps(String),
    PublicIp(String, String),
    StorageAccounts(String),
    StorageAccount(String, String),
    /// `/subscriptions/{s}/providers/{ns}/locations/{loc}/operations/{id}` (status).
    ProviderOperationStatus(String, String),
    /// `/subscriptions/{s}/providers/{ns}/locations/{loc}/operationResults/{id}` (Location).
    ProviderOperationResult(String, String, String),
    /// A path under a vault that the simulator does not serve.
    Unserved,
}

/// Why a path was not recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Not an ARM path the simulator serves.
    Unknown,
    /// The subscription is not the simulated one.
    WrongSubscription(String),
    /// The resource group is not the vault's.
    WrongResourceGroup(String),
    /// The vault is not the simulated one.
    WrongVault(String),
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// What an ARM path addresses below its subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The subscription itself (provider operation status and results).
    Subscription,
    /// A resource group's Compute, Network or Storage resources.
    ResourceGroup(String),
    /// A Recovery Services vault (resource group, vault name).
    Vault(String, String),
}

/// A recognised ARM path: whose it is, and what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addressed {
    /// The subscription id, as written in the path.
    pub subscription: String,
    /// The part of the subscription it addresses.
    pub scope: Scope,
    /// The route within that scope.
    pub route: Route,
}

/// Why a path could not be addressed, before any estate is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Not under `/subscriptions/{id}`.
    NotArm,
    /// Under subscription `.0`, but not an ARM path the simulator serves.
    Unknown(String),
}

impl AddressError {
    /// The subscription the path names, if any.
    pub fn subscription(&self) -> Option<&str> {
        match self {
            AddressError::NotArm => None,
            AddressError::Unknown(s) => Some(s),
        }
    }
}

/// Parses `path` into the subscription, resource group or vault it addresses and the route
/// within it, whatever estates exist.
pub fn address(path: &str) -> Result<Addressed, AddressError> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| urlencoding::decode(s).map(|c| c.into_owned()).unwrap_or_else(|_| s.to_owned()))
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    if s.len() < 2 || !eq(s[0], "subscriptions") {
        return Err(AddressError::NotArm);
    }
    let o = |x: &str| x.to_owned();
    let subscription = o(s[1]);
    let unknown = || AddressError::Unknown(subscription.clone());
    let at = |scope: Scope, route: Route| Addressed { subscription: subscription.clone(), scope, route };
    // Subscription-level provider operations (Compute/Network async ops).
    if s.len() == 8 && eq(s[2], "providers") && eq(s[4], "locations") {
        if eq(s[6], "operations") {
            return Ok(at(Scope::Subscription, Route::ProviderOperationStatus(o(s[3]), o(s[7]))));
        }
        if eq(s[6], "operationresults") {
            return Ok(at(Scope::Subscription, Route::ProviderOperationResult(o(s[3]), o(s[5]), o(s[7]))));
        }
    }
    if s.len() < 6 || !eq(s[2], "resourcegroups") || !eq(s[4], "providers") {
        return Err(unknown());
    }
    let rg = s[3];
    let ns = s[5];
    let rest = &s[6..];
    if eq(ns, "microsoft.compute") || eq(ns, "microsoft.network") || eq(ns, "microsoft.storage") {
        let route = match (ns.to_ascii_lowercase().as_str(), rest) {
            ("microsoft.compute", [t]) if eq(t, "virtualmachines") => Route::Vms(o(rg)),
            ("microsoft.compute", [t, n]) if eq(t, "virtualmachines") => Route::Vm(o(rg), o(n)),
            ("microsoft.compute", [t, n, v]) if eq(t, "virtualmachines") && eq(v, "instanceview") => {
                Route::VmInstanceView(o(rg), o(n))
            }
            ("microsoft.network", [t]) if eq(t, "networkinterfaces") => Route::Nics(o(rg)),
            ("microsoft.network", [t, n]) if eq(t, "networkinterfaces") => Route::Nic(o(rg), o(n)),
            ("microsoft.compute", [t]) if eq(t, "disks") => Route::Disks(o(rg)),
            ("microsoft.compute", [t, n]) if eq(t, "disks") => Route::Disk(o(rg), o(n)),
            ("microsoft.network", [t]) if eq(t, "publicipaddresses") => Route::PublicIps(o(rg)),
            ("microsoft.network", [t, n]) if eq(t, "publicipaddresses") => Route::PublicIp(o(rg), o(n)),
            ("microsoft.storage", [t]) if eq(t, "storageaccounts") => Route::StorageAccounts(o(rg)),
            ("microsoft.storage", [t, n]) if eq(t, "storageaccounts") => Route::StorageAccount(o(rg), o(n)),
            _ => return Err(unknown()),
        };
        return Ok(at(Scope::ResourceGroup(o(rg)), route));
    }
    if !eq(ns, "microsoft.recoveryservices") || rest.len() < 2 || !eq(rest[0], "vaults") {
        return Err(unknown());
    }
    let v = &rest[2..];
    let k = |i: usize, name: &str| v.get(i).is_some_and(|x| eq(x, name));
    let route = match v.len() {
        0 => Route::Vault,
        1 if k(0, "replicationFabrics") => Route::Fabrics,
        1 if k(0, "replicationProtectionContainers") => Route::AllContainers,
        1 if k(0, "replicationProtectionContainerMappings") => Route::AllMappings,
        1 if k(0, "replicationProtectedItems") => Route::VaultItems,
        1 if k(0, "replicationPolicies") => Route::Policies,
        1 if k(0, "replicationJobs") => Route::Jobs,
        1 if k(0, "replicationRecoveryPlans") => Route::Plans,
        2 if k(0, "replicationFabrics") => Route::Fabric(o(v[1])),
        2 if k(0, "replicationPolicies") => Route::Policy(o(v[1])),
        2 if k(0, "replicationJobs") => Route::Job(o(v[1])),
        2 if k(0, "replicationOperationStatus") => Route::OperationStatus(o(v[1])),
        2 if k(0, "replicationRecoveryPlans") => Route::Plan(o(v[1])),
        3 if k(0, "replicationJobs") => Route::JobAction(o(v[1]), o(v[2])),
        3 if k(0, "replicationRecoveryPlans") => Route::PlanAction(o(v[1]), o(v[2])),
        3 if k(0, "replicationFabrics") && k(2, "replicationProtectionContainers") => Route::Containers(o(v[1])),
        4 if k(0, "replicationRecoveryPlans") && k(2, "operationresults") => {
            Route::PlanOperationResult(o(v[1]), o(v[3]))
        }
        4 if k(0, "replicationFabrics") && k(2, "replicationProtectionContainers") => {
            Route::Container(o(v[1]), o(v[3]))
        }
        5 if k(2, "replicationProtectionContainers") && k(4, "replicationProtectionContainerMappings") => {
            Route::Mappings(o(v[1]), o(v[3]))
        }
        5 if k(2, "replicationProtectionContainers") && k(4, "switchprotection") => {
            Route::SwitchProtection(o(v[1]), o(v[3]))
        }
        5 if k(2, "replicationProtectionContainers") && k(4, "replicationProtectedItems") => {
            Route::Items(o(v[1]), o(v[3]))
        }
        6 if k(4, "replicationProtectionContainerMappings") => Route::Mapping(o(v[1]), o(v[3]), o(v[5])),
        6 if k(4, "operationresults") => Route::ContainerOperationResult(o(v[1]), o(v[3]), o(v[5])),
        6 if k(4, "replicationProtectedItems") => Route::Item(o(v[1]), o(v[3]), o(v[5])),
        7 if k(4, "replicationProtectedItems") && k(6, "recoveryPoints") => Route::Points(o(v[1]), o(v[3]), o(v[5])),
        7 if k(4, "replicationProtectedItems") => Route::ItemAction(o(v[1]), o(v[3]), o(v[5]), o(v[6])),
        8 if k(4, "replicationProtectedItems") && k(6, "recoveryPoints") => {
            Route::Point(o(v[1]), o(v[3]), o(v[5]), o(v[7]))
        }
        8 if k(4, "replicationProtectedItems") && k(6, "operationresults") => {
            Route::ItemOperationResult(o(v[1]), o(v[3]), o(v[5]), o(v[7]))
        }
        // A vault path with an unknown tail is still the vault's: an unknown vault is told
        // first, as ARM checks the resource before its child path.
        _ => Route::Unserved,
    };
    Ok(at(Scope::Vault(o(rg), o(rest[1])), route))
}

/// Parses `path` for the estate of (`subscription`, `resource_group`, `vault`): the routing
/// of a single-vault simulator, [`address`] checked against that one vault.
pub fn parse(path: &str, subscription: &str, resource_group: &str, vault: &str) -> Result<Route, RouteError> {
    let a = match address(path) {
        Ok(a) => a,
        Err(AddressError::NotArm) => return Err(RouteError::Unknown),
        Err(AddressError::Unknown(s)) if !eq(&s, subscription) => return Err(RouteError::WrongSubscription(s)),
        Err(AddressError::Unknown(_)) => return Err(RouteError::Unknown),
    };
    if !eq(&a.subscription, subscription) {
        return Err(RouteError::WrongSubscription(a.subscription));
    }
    if let Scope::Vault(rg, v) = &a.scope {
        if !eq(rg, resource_group) {
            return Err(RouteError::WrongResourceGroup(rg.clone()));
        }
        if !eq(v, vault) {
            return Err(RouteError::WrongVault(v.clone()));
        }
    }
    match a.route {
        Route::Unserved => Err(RouteError::Unknown),
        route => Ok(route),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "/Subscriptions/S/resourceGroups/RG/providers/Microsoft.RecoveryServices/vaults/V";

    fn p(path: &str) -> Result<Route, RouteError> {
        parse(path, "s", "rg", "v")
    }

    #[test]
    fn asr_paths_are_recognised_whatever_their_case() {
        assert_eq!(
            p(&format!(
                "{V}/replicationFabrics/F/replicationProtectionContainers/C/replicationProtectedItems/I/unplannedFailover"
            )),
            Ok(Route::ItemAction("F".into(), "C".into(), "I".into(), "unplannedFailover".into()))
        );
        assert_eq!(
            p(&format!("{V}/REPLICATIONFABRICS/F/replicationprotectioncontainers/C/switchProtection")),
            Ok(Route::SwitchProtection("F".into(), "C".into()))
        );
        assert_eq!(p(&format!("{V}/replicationJobs/J/cancel")), Ok(Route::JobAction("J".into(), "cancel".into())));
        assert_eq!(p(&format!("{V}/replicationOperationStatus/J")), Ok(Route::OperationStatus("J".into())));
        assert_eq!(
            p("/subscriptions/s/resourceGroups/app/providers/Microsoft.Compute/virtualMachines/web/instanceView"),
            Ok(Route::VmInstanceView("app".into(), "web".into()))
        );
        assert_eq!(
            p("/subscriptions/s/resourceGroups/app/providers/Microsoft.Storage/storageAccounts/eastusasrcache"),
            Ok(Route::StorageAccount("app".into(), "eastusasrcache".into()))
        );
        assert_eq!(
            p("/subscriptions/s/resourceGroups/app/providers/Microsoft.Network/publicIPAddresses"),
            Ok(Route::PublicIps("app".into()))
        );
        assert_eq!(
            p("/subscriptions/s/providers/Microsoft.Compute/locations/eastus/operationResults/J"),
            Ok(Route::ProviderOperationResult("Microsoft.Compute".into(), "eastus".into(), "J".into()))
        );
    }

    #[test]
    fn foreign_scopes_are_told_apart() {
        assert_eq!(p("/subscriptions/other/resourceGroups/rg"), Err(RouteError::WrongSubscription("other".into())));
        assert_eq!(
            p("/subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/w"),
            Err(RouteError::WrongVault("w".into()))
        );
        assert_eq!(p("/foo"), Err(RouteError::Unknown));
    }
}
