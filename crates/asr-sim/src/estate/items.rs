//! Protected items: finding one by fabric, container and name, rendering it, listing items and
//! recovery points, and removing an item from the vault's indexes.

use time::Duration;

use super::{Estate, ItemFilter, POLICY, Refusal};
use crate::item::{Item, RenderContext};
use crate::wire::{ProtectedItemProperties, RecoveryPointProperties, Resource};

impl Estate {
    pub(super) fn item_key(&self, fabric: &str, container: &str, name: &str) -> Result<String, Refusal> {
        let r = self.region_of_container(fabric, container)?;
        let key = name.to_ascii_lowercase();
        if self.members[r].contains(&key) {
            Ok(key)
        } else {
            Err(Refusal::not_found("replication protected item", name))
        }
    }

    fn render_cx(&self) -> RenderContext<'_> {
        RenderContext {
            scope: &self.scope,
            regions: &self.regions,
            now: self.now(),
            policy: &self.cfg.policy,
            scenario_lag: Duration::seconds_f64(self.cfg.item_scenario_lag_secs),
            policy_name: POLICY,
        }
    }

    pub(super) fn render_item(&self, item: &Item) -> Resource<ProtectedItemProperties> {
        item.render(&self.render_cx())
    }

    /// GET an item.
    pub fn get_item(
        &self,
        fabric: &str,
        container: &str,
        name: &str,
    ) -> Result<Resource<ProtectedItemProperties>, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        Ok(self.render_item(&self.items[&key]))
    }

    /// A page of items: of one container (`Some(fabric, container)`) or of the vault.
    pub fn list_items(
        &self,
        container: Option<(&str, &str)>,
        filter: &ItemFilter,
        skip: Option<&str>,
    ) -> Result<(Vec<Resource<ProtectedItemProperties>>, Option<String>), Refusal> {
        let region = match (container, filter.source_fabric()) {
            (Some((f, c)), _) => Some(self.region_of_container(f, c)?),
            // A source fabric filter names the container index to walk.
            (None, Some(f)) => match self.regions.iter().position(|r| r.fabric.eq_ignore_ascii_case(f)) {
                Some(r) => Some(r),
                None => return Ok((vec![], None)),
            },
            (None, None) => None,
        };
        let from = skip.map(str::to_ascii_lowercase).unwrap_or_default();
        let keys: Box<dyn Iterator<Item = &String>> = match region {
            Some(r) => Box::new(
                self.members[r].range::<String, _>((std::ops::Bound::Excluded(&from), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(
                self.items
                    .range::<String, _>((std::ops::Bound::Excluded(&from), std::ops::Bound::Unbounded))
                    .map(|(k, _)| k),
            ),
        };
        let keys: Box<dyn Iterator<Item = &String>> = if skip.is_none() {
            match region {
                Some(r) => Box::new(self.members[r].iter()),
                None => Box::new(self.items.keys()),
            }
        } else {
            keys
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        for key in keys {
            let item = &self.items[key];
            if !filter.matches(item, &self.regions) {
                continue;
            }
            if out.len() == self.cfg.page_size {
                more = true;
                break;
            }
            out.push(self.render_item(item));
            last = Some(key.clone());
        }
        Ok((out, if more { last } else { None }))
    }

    /// Recovery points of an item, newest first.
    pub fn list_points(
        &self,
        fabric: &str,
        container: &str,
        name: &str,
    ) -> Result<Vec<Resource<RecoveryPointProperties>>, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        let item = &self.items[&key];
        let id = item.id(&self.scope, &self.regions);
        let mut points = item.points(self.now(), &self.cfg.policy);
        points.reverse();
        Ok(points.iter().map(|p| item.render_point(p, &id, &self.scope, &self.regions)).collect())
    }

    /// One recovery point.
    pub fn get_point(
        &self,
        fabric: &str,
        container: &str,
        name: &str,
        point: &str,
    ) -> Result<Resource<RecoveryPointProperties>, Refusal> {
        let key = self.item_key(fabric, container, name)?;
        let item = &self.items[&key];
        let id = item.id(&self.scope, &self.regions);
        item.points(self.now(), &self.cfg.policy)
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(point))
            .map(|p| item.render_point(p, &id, &self.scope, &self.regions))
            .ok_or_else(|| Refusal::not_found("recovery point", point))
    }

    pub(super) fn remove_item(&mut self, key: &str) {
        if let Some(item) = self.items.remove(key) {
            self.members[item.primary].remove(key);
            self.by_lifecycle.remove(&item.lifecycle_id);
            for plan in self.plans.values_mut() {
                for g in &mut plan.groups {
                    g.retain(|k| k != key);
                }
            }
        }
    }
}
