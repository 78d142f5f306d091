//! The vault's topology: the two regions' fabrics, protection containers and container
//! mappings, the vault resource and its one replication policy.

use serde_json::{Map, Value, json};

use super::{Estate, POLICY, Refusal};
use crate::item::Region;
use crate::wire::{ContainerProperties, FabricProperties, MappingProperties, PolicyProperties, Resource};

pub(super) fn region(location: &str, app_rg: String) -> Region {
    Region {
        location: location.to_ascii_lowercase(),
        friendly: friendly_location(location),
        fabric: format!("asr-a2a-default-{}", location.to_ascii_lowercase()),
        container: format!("asr-a2a-default-{}-container", location.to_ascii_lowercase()),
        app_rg,
    }
}

fn friendly_location(location: &str) -> String {
    // "eastus2" -> "East US 2", "uksouth" -> "UK South": good enough for display names.
    let l = location.to_ascii_lowercase();
    let mut words: Vec<String> = Vec::new();
    let mut rest = l.as_str();
    while !rest.is_empty() {
        let known = ["central", "north", "south", "east", "west", "us", "uk", "asia", "europe"];
        if let Some(k) = known.iter().find(|k| rest.starts_with(**k)) {
            words.push(if k.len() <= 2 { k.to_ascii_uppercase() } else { capitalize(k) });
            rest = &rest[k.len()..];
        } else if rest.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            words.push(rest.to_owned());
            break;
        } else {
            words.push(capitalize(rest));
            break;
        }
    }
    words.join(" ")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

impl Estate {
    fn region_of_fabric(&self, fabric: &str) -> Result<usize, Refusal> {
        self.regions.iter().position(|r| r.fabric.eq_ignore_ascii_case(fabric)).ok_or_else(|| {
            // ASR answers an unknown fabric this way, not with 404.
            Refusal::new(
                400,
                "BadRequest",
                format!("The fabric '{fabric}' is not registered with Site Recovery in this vault."),
                "SubscriptionIdNotRegisteredWithSrs",
                "Check the fabric name (list replicationFabrics) and retry.",
            )
        })
    }

    pub(super) fn region_of_container(&self, fabric: &str, container: &str) -> Result<usize, Refusal> {
        let r = self.region_of_fabric(fabric)?;
        if self.regions[r].container.eq_ignore_ascii_case(container) {
            Ok(r)
        } else {
            Err(Refusal::not_found("protection container", container))
        }
    }

    /// The vault resource.
    pub fn vault(&self) -> Value {
        json!({
            "id": self.scope.vault_id().replacen("/Subscriptions/", "/subscriptions/", 1),
            "name": self.scope.vault, "type": "Microsoft.RecoveryServices/vaults",
            "location": self.regions[1].location, "tags": {}, "sku": {"name": "Standard"},
            "properties": {"provisioningState": "Succeeded", "privateEndpointStateForBackup": "None",
                "privateEndpointStateForSiteRecovery": "None"},
        })
    }

    /// Fabrics.
    pub fn fabrics(&self) -> Vec<Resource<FabricProperties>> {
        (0..2).map(|r| self.render_fabric(r)).collect()
    }

    /// One fabric.
    pub fn fabric(&self, fabric: &str) -> Result<Resource<FabricProperties>, Refusal> {
        Ok(self.render_fabric(self.region_of_fabric(fabric)?))
    }

    fn render_fabric(&self, r: usize) -> Resource<FabricProperties> {
        let reg = &self.regions[r];
        let mut extra = Map::new();
        extra.insert("encryptionDetails".into(), json!({"kekState": "None", "kekCertThumbprint": null}));
        extra.insert("rolloverEncryptionDetails".into(), json!({"kekState": "None", "kekCertThumbprint": null}));
        Resource {
            id: self.scope.fabric_id(&reg.fabric),
            name: reg.fabric.clone(),
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics".into(),
            location: None,
            properties: FabricProperties {
                friendly_name: Some(reg.friendly.clone()),
                internal_identifier: Some(crate::ids::guid_of(&[&reg.fabric])),
                bcdr_state: Some("Valid".into()),
                custom_details: Some(json!({
                    "instanceType": "Azure", "location": reg.location,
                    "containerIds": [self.scope.container_id(&reg.fabric, &reg.container)], "zones": [],
                })),
                health_error_details: Some(vec![]),
                health: Some("Normal".into()),
                extra,
            },
            extra: Map::new(),
        }
    }

    /// Containers of a fabric.
    pub fn containers(&self, fabric: &str) -> Result<Vec<Resource<ContainerProperties>>, Refusal> {
        Ok(vec![self.render_container(self.region_of_fabric(fabric)?)])
    }

    /// Every container.
    pub fn all_containers(&self) -> Vec<Resource<ContainerProperties>> {
        (0..2).map(|r| self.render_container(r)).collect()
    }

    /// One container.
    pub fn container(&self, fabric: &str, container: &str) -> Result<Resource<ContainerProperties>, Refusal> {
        Ok(self.render_container(self.region_of_container(fabric, container)?))
    }

    pub(super) fn render_container(&self, r: usize) -> Resource<ContainerProperties> {
        let reg = &self.regions[r];
        Resource {
            id: self.scope.container_id(&reg.fabric, &reg.container),
            name: reg.container.clone(),
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers".into(),
            location: None,
            properties: ContainerProperties {
                fabric_friendly_name: Some(reg.friendly.clone()),
                friendly_name: Some(reg.container.clone()),
                fabric_type: Some("Azure".into()),
                protected_item_count: Some(self.members[r].len() as i64),
                pairing_status: Some("Paired".into()),
                role: Some("Primary".into()),
                fabric_specific_details: None,
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }

    /// Container mappings of a container (one: to the other region).
    pub fn mappings(&self, fabric: &str, container: &str) -> Result<Vec<Resource<MappingProperties>>, Refusal> {
        Ok(vec![self.render_mapping(self.region_of_container(fabric, container)?)])
    }

    /// Every mapping.
    pub fn all_mappings(&self) -> Vec<Resource<MappingProperties>> {
        (0..2).map(|r| self.render_mapping(r)).collect()
    }

    /// One mapping.
    pub fn mapping(&self, fabric: &str, container: &str, name: &str) -> Result<Resource<MappingProperties>, Refusal> {
        let r = self.region_of_container(fabric, container)?;
        let m = self.render_mapping(r);
        if m.name.eq_ignore_ascii_case(name) {
            Ok(m)
        } else {
            Err(Refusal::not_found("protection container mapping", name))
        }
    }

    fn render_mapping(&self, r: usize) -> Resource<MappingProperties> {
        let (src, dst) = (&self.regions[r], &self.regions[1 - r]);
        let name = format!("{}-{}-24-hour-retention-policy", src.location, dst.location);
        Resource {
            id: format!("{}/replicationProtectionContainerMappings/{name}", self.scope.container_id(&src.fabric, &src.container)),
            name,
            kind: "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectionContainerMappings".into(),
            location: None,
            properties: MappingProperties {
                target_protection_container_id: Some(self.scope.container_id(&dst.fabric, &dst.container)),
                target_protection_container_friendly_name: Some(dst.container.clone()),
                provider_specific_details: Some(json!({
                    "instanceType": "A2A", "agentAutoUpdateStatus": "Disabled",
                    "automationAccountAuthenticationType": "RunAsAccount", "automationAccountArmId": null,
                    "scheduleName": null, "jobScheduleName": null,
                })),
                health: Some("Normal".into()),
                health_error_details: Some(vec![]),
                policy_id: Some(self.scope.policy_id(POLICY)),
                state: Some("Paired".into()),
                source_protection_container_friendly_name: Some(src.container.clone()),
                source_fabric_friendly_name: Some(src.friendly.clone()),
                target_fabric_friendly_name: Some(dst.friendly.clone()),
                policy_friendly_name: Some(POLICY.into()),
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }

    /// The replication policy.
    pub fn policy(&self, name: &str) -> Result<Resource<PolicyProperties>, Refusal> {
        if !name.eq_ignore_ascii_case(POLICY) {
            return Err(Refusal::not_found("replication policy", name));
        }
        let p = &self.cfg.policy;
        Ok(Resource {
            id: self.scope.policy_id(POLICY),
            name: POLICY.into(),
            kind: "Microsoft.RecoveryServices/vaults/replicationPolicies".into(),
            location: None,
            properties: PolicyProperties {
                friendly_name: Some(POLICY.into()),
                provider_specific_details: Some(json!({
                    "instanceType": "A2A", "recoveryPointThresholdInMinutes": 0,
                    "recoveryPointHistory": p.retention_minutes, "appConsistentFrequencyInMinutes": p.app_consistent_minutes,
                    "multiVmSyncStatus": "Enabled", "crashConsistentFrequencyInMinutes": p.crash_consistent_minutes,
                    "status": false, "associatedItemsCount": self.items.len(), "dataSourceType": "VM",
                })),
                extra: Map::new(),
            },
            extra: Map::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_read_like_azure_display_names() {
        assert_eq!(friendly_location("eastus"), "East US");
        assert_eq!(friendly_location("uksouth"), "UK South");
        assert_eq!(friendly_location("westus2"), "West US 2");
    }
}
