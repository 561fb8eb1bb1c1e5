//! Choosing upstream channels for a call.
//!
//! A [`Catalogue`] is an immutable snapshot of the enabled channels and priced models;
//! the server swaps in a new one when the store changes. [`Catalogue::candidates`]
//! returns, in the order to try them, the channels that serve a model for a group:
//! highest priority tier first, weighted random order inside a tier — or, for a call
//! that carries a session key, the key's own weighted rendezvous order (`sticky.rs`).
//! Later stages (policy, health) only ever remove candidates, never add them.
//!
//! `health.rs` keeps each channel's health (error-rate window, latency, cool-downs); it
//! is pure state driven by the server.

pub mod health;
pub mod sticky;

pub use sticky::SessionKey;

use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use veil_domain::{Channel, GroupName, Model, ModelName};

/// A channel plus whatever the caller attaches to it (the server attaches its provider).
#[derive(Debug)]
pub struct Candidate<T> {
    pub channel: Channel,
    pub attached: T,
}

#[derive(Debug)]
pub struct Catalogue<T> {
    channels: Vec<Arc<Candidate<T>>>,
    /// Model name → indexes into `channels` that serve it, sorted by priority (desc).
    serving: HashMap<ModelName, Vec<usize>>,
    models: HashMap<ModelName, Model>,
}

impl<T> Catalogue<T> {
    /// Builds a snapshot; disabled channels are left out entirely.
    pub fn new(channels: Vec<(Channel, T)>, models: Vec<Model>) -> Self {
        let channels: Vec<Arc<Candidate<T>>> = channels
            .into_iter()
            .filter(|(channel, _)| channel.enabled)
            .map(|(channel, attached)| Arc::new(Candidate { channel, attached }))
            .collect();
        let mut serving: HashMap<ModelName, Vec<usize>> = HashMap::new();
        for (index, candidate) in channels.iter().enumerate() {
            for model in &candidate.channel.models {
                serving.entry(model.clone()).or_default().push(index);
            }
        }
        for indexes in serving.values_mut() {
            indexes.sort_by_key(|&i| std::cmp::Reverse(channels.get(i).map_or(i32::MIN, |c| c.channel.priority)));
        }
        let models = models.into_iter().map(|m| (m.name.clone(), m)).collect();
        Self { channels, serving, models }
    }

    pub fn model(&self, name: &ModelName) -> Option<&Model> {
        self.models.get(name)
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// Models a group can reach through at least one enabled channel, sorted by name.
    pub fn models_for_group(&self, group: &GroupName) -> Vec<&ModelName> {
        let mut names: Vec<&ModelName> = self
            .serving
            .iter()
            .filter(|(_, indexes)| indexes.iter().any(|&i| self.channel_admits(i, group)))
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names
    }

    pub fn channel_by_name(&self, name: &str) -> Option<&Arc<Candidate<T>>> {
        self.channels.iter().find(|c| c.channel.name.as_str() == name)
    }

    pub fn channels(&self) -> impl Iterator<Item = &Arc<Candidate<T>>> {
        self.channels.iter()
    }

    fn channel_admits(&self, index: usize, group: &GroupName) -> bool {
        self.channels.get(index).is_some_and(|c| c.channel.admits_group(group))
    }

    /// The channels that serve `model` for `group`, highest priority first (ties in
    /// catalogue order).
    fn eligible(&self, model: &ModelName, group: &GroupName) -> Vec<&Arc<Candidate<T>>> {
        let Some(indexes) = self.serving.get(model) else { return Vec::new() };
        indexes.iter().filter_map(|&i| self.channels.get(i)).filter(|c| c.channel.admits_group(group)).collect()
    }

    /// The channels to try for `model` on behalf of the session `key`, in order: tiers by
    /// priority, each tier in the key's weighted rendezvous order (the same every time).
    pub fn candidates_for_session(
        &self,
        model: &ModelName,
        group: &GroupName,
        key: SessionKey,
    ) -> Vec<Arc<Candidate<T>>> {
        let eligible = self.eligible(model, group);
        let mut ordered = Vec::with_capacity(eligible.len());
        for tier in eligible.chunk_by(|a, b| a.channel.priority == b.channel.priority) {
            let mut scored: Vec<(f64, &Arc<Candidate<T>>)> =
                tier.iter().map(|c| (key.score(&c.channel.name, c.channel.weight), *c)).collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            ordered.extend(scored.into_iter().map(|(_, c)| Arc::clone(c)));
        }
        ordered
    }

    /// The channels to try for `model` on behalf of `group`, in order.
    pub fn candidates(&self, model: &ModelName, group: &GroupName, rng: &mut impl Rng) -> Vec<Arc<Candidate<T>>> {
        let eligible = self.eligible(model, group);
        let mut ordered = Vec::with_capacity(eligible.len());
        for tier in eligible.chunk_by(|a, b| a.channel.priority == b.channel.priority) {
            let mut remaining: Vec<&Arc<Candidate<T>>> = tier.to_vec();
            while !remaining.is_empty() {
                let total: u64 = remaining.iter().map(|c| u64::from(c.channel.weight.max(1))).sum();
                let mut ticket = rng.random_range(0..total);
                let mut chosen = 0;
                for (position, candidate) in remaining.iter().enumerate() {
                    let weight = u64::from(candidate.channel.weight.max(1));
                    if ticket < weight {
                        chosen = position;
                        break;
                    }
                    ticket -= weight;
                }
                ordered.push(Arc::clone(remaining.swap_remove(chosen)));
            }
        }
        ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::BTreeMap;
    use veil_domain::{ChannelKind, ChannelName, DataPolicy, Retention, Timeouts};

    fn channel(name: &str, priority: i32, weight: u32, groups: Option<&[&str]>) -> (Channel, ()) {
        let channel = Channel {
            name: ChannelName::parse(name).unwrap(),
            kind: ChannelKind::Openai,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key_env: None,
            models: vec![ModelName::parse("m").unwrap()],
            model_mapping: BTreeMap::new(),
            priority,
            weight,
            groups: groups.map(|g| g.iter().map(|n| GroupName::parse(n).unwrap()).collect()),
            policy: DataPolicy {
                retention: Retention::None,
                training: false,
                region: None,
                human_review: false,
                operator: "self".into(),
            },
            timeouts: Timeouts::default(),
            limits: Default::default(),
            tls_verify: true,
            probe_interval: None,
            enabled: true,
            managed: true,
        };
        (channel, ())
    }

    fn names(candidates: &[Arc<Candidate<()>>]) -> Vec<&str> {
        candidates.iter().map(|c| c.channel.name.as_str()).collect()
    }

    #[test]
    fn higher_priority_tiers_come_first() {
        let catalogue = Catalogue::new(vec![channel("low", 1, 1, None), channel("high", 10, 1, None)], vec![]);
        let mut rng = StdRng::seed_from_u64(7);
        let model = ModelName::parse("m").unwrap();
        for _ in 0..20 {
            let order = catalogue.candidates(&model, &GroupName::default_group(), &mut rng);
            assert_eq!(names(&order), ["high", "low"]);
        }
    }

    #[test]
    fn weights_share_a_tier() {
        let catalogue = Catalogue::new(vec![channel("a", 0, 3, None), channel("b", 0, 1, None)], vec![]);
        let mut rng = StdRng::seed_from_u64(42);
        let model = ModelName::parse("m").unwrap();
        let first_a = (0..4000)
            .filter(|_| {
                catalogue.candidates(&model, &GroupName::default_group(), &mut rng)[0].channel.name.as_str() == "a"
            })
            .count();
        // Expected 3000 of 4000; allow generous statistical slack.
        assert!((2800..3200).contains(&first_a), "a first {first_a} times");
    }

    #[test]
    fn groups_and_disabled_channels_are_respected() {
        let (mut off, ()) = channel("off", 5, 1, None);
        off.enabled = false;
        let catalogue = Catalogue::new(
            vec![(off, ()), channel("vip-only", 3, 1, Some(&["vip"])), channel("all", 1, 1, None)],
            vec![],
        );
        let mut rng = StdRng::seed_from_u64(1);
        let model = ModelName::parse("m").unwrap();
        assert_eq!(names(&catalogue.candidates(&model, &GroupName::default_group(), &mut rng)), ["all"]);
        assert_eq!(
            names(&catalogue.candidates(&model, &GroupName::parse("vip").unwrap(), &mut rng)),
            ["vip-only", "all"]
        );
        assert!(
            catalogue.candidates(&ModelName::parse("other").unwrap(), &GroupName::default_group(), &mut rng).is_empty()
        );
        assert_eq!(catalogue.models_for_group(&GroupName::default_group()).len(), 1);
    }

    #[test]
    fn a_session_keeps_its_channel_and_keeps_priority_order() {
        let catalogue = Catalogue::new(
            vec![
                channel("a", 0, 1, None),
                channel("b", 0, 1, None),
                channel("c", 0, 1, None),
                channel("top", 5, 1, None),
            ],
            vec![],
        );
        let model = ModelName::parse("m").unwrap();
        let group = GroupName::default_group();
        let key = SessionKey::from_client("session-1");
        let first = names(&catalogue.candidates_for_session(&model, &group, key)).join(",");
        for _ in 0..20 {
            assert_eq!(names(&catalogue.candidates_for_session(&model, &group, key)).join(","), first);
        }
        assert!(first.starts_with("top,"), "{first}");
        // Different keys spread over the tier.
        let leaders: std::collections::HashSet<String> = (0..50)
            .map(|i| {
                let key = SessionKey::from_client(&format!("s-{i}"));
                catalogue.candidates_for_session(&model, &group, key)[1].channel.name.to_string()
            })
            .collect();
        assert_eq!(leaders.len(), 3, "{leaders:?}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn tier(weights: &[u32]) -> Catalogue<()> {
            let channels = weights.iter().enumerate().map(|(i, w)| channel(&format!("ch-{i}"), 0, *w, None)).collect();
            Catalogue::new(channels, vec![])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]

            /// One key always gets the same order, and every channel appears once.
            #[test]
            fn the_order_is_a_deterministic_permutation(
                weights in proptest::collection::vec(1u32..20, 1..8),
                session in "[a-zA-Z0-9-]{1,40}",
            ) {
                let catalogue = tier(&weights);
                let model = ModelName::parse("m").unwrap();
                let group = GroupName::default_group();
                let key = SessionKey::from_client(&session);
                let once = names(&catalogue.candidates_for_session(&model, &group, key)).join(",");
                let again = names(&catalogue.candidates_for_session(&model, &group, key)).join(",");
                prop_assert_eq!(&once, &again);
                let mut sorted: Vec<&str> = once.split(',').collect();
                sorted.sort_unstable();
                sorted.dedup();
                prop_assert_eq!(sorted.len(), weights.len());
            }

            /// Across many keys, each channel leads its tier in proportion to its weight.
            #[test]
            fn weights_are_respected_across_keys(
                weights in proptest::collection::vec(1u32..6, 2..5),
                salt in 0u32..1000,
            ) {
                let catalogue = tier(&weights);
                let model = ModelName::parse("m").unwrap();
                let group = GroupName::default_group();
                let keys = 4000u32;
                let mut firsts = vec![0u32; weights.len()];
                for i in 0..keys {
                    let key = SessionKey::from_client(&format!("{salt}-{i}"));
                    let leader = catalogue.candidates_for_session(&model, &group, key)[0].channel.name.to_string();
                    let index: usize = leader.trim_start_matches("ch-").parse().unwrap();
                    firsts[index] += 1;
                }
                let total: u32 = weights.iter().sum();
                for (index, weight) in weights.iter().enumerate() {
                    let expected = f64::from(keys) * f64::from(*weight) / f64::from(total);
                    let got = f64::from(firsts[index]);
                    // Binomial: allow five standard deviations.
                    let p = f64::from(*weight) / f64::from(total);
                    let slack = 5.0 * (f64::from(keys) * p * (1.0 - p)).sqrt() + 1.0;
                    prop_assert!((got - expected).abs() <= slack, "channel {} first {} times, expected {:.0}", index, got, expected);
                }
            }
        }
    }
}
