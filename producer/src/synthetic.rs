//! Synthetic traffic: a realistic mix of the platform's events, for demos,
//! load tests and benchmarks. Deterministic for a given seed.

use activity_core::NewEvent;
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

/// The ten known event types and how common each is, per 1000 events.
pub const MIX: [(&str, u32); 10] = [
    ("user.login", 420),
    ("member.activated", 120),
    ("github.push", 110),
    ("webhook.triggered", 100),
    ("github.pr.opened", 60),
    ("member.created", 60),
    ("event.created", 50),
    ("user.signup", 40),
    ("hackathon.created", 20),
    ("community.created", 20),
];

const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "GitHub-Hookshot/8f1e2d3",
    "okhttp/4.12.0",
];

/// Shape of the generated traffic.
#[derive(Debug, Clone)]
pub struct Shape {
    pub communities: usize,
    pub users: usize,
    /// Events are spread over this many days before `end`.
    pub days: i64,
    pub end: DateTime<Utc>,
    /// Fraction of events that repeat an earlier event (same `event_id`).
    pub duplicates: f64,
    pub seed: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            communities: 50,
            users: 5_000,
            days: 7,
            end: Utc::now(),
            duplicates: 0.0,
            seed: 42,
        }
    }
}

/// An endless stream of events; every event has its `event_id` set, so a
/// duplicate is exactly the same event sent again.
pub struct Generator {
    shape: Shape,
    rng: StdRng,
    communities: Vec<Uuid>,
    users: Vec<Uuid>,
    recent: Vec<NewEvent>,
    total_weight: u32,
}

impl Generator {
    pub fn new(shape: Shape) -> Self {
        let mut rng = StdRng::seed_from_u64(shape.seed);
        let communities = (0..shape.communities.max(1))
            .map(|_| random_uuid(&mut rng))
            .collect();
        let users = (0..shape.users.max(1))
            .map(|_| random_uuid(&mut rng))
            .collect();
        Self {
            total_weight: MIX.iter().map(|(_, w)| w).sum(),
            shape,
            rng,
            communities,
            users,
            recent: Vec::with_capacity(1024),
        }
    }

    /// The next event: a repeat of a recent one with probability
    /// `duplicates`, otherwise a new one.
    pub fn next_event(&mut self) -> NewEvent {
        if !self.recent.is_empty() && self.rng.gen_bool(self.shape.duplicates.clamp(0.0, 1.0)) {
            let index = self.rng.gen_range(0..self.recent.len());
            return self.recent[index].clone();
        }
        let event = self.fresh();
        if self.recent.len() < 1024 {
            self.recent.push(event.clone());
        } else {
            let slot = self.rng.gen_range(0..self.recent.len());
            self.recent[slot] = event.clone();
        }
        event
    }

    fn fresh(&mut self) -> NewEvent {
        let mut pick = self.rng.gen_range(0..self.total_weight);
        let event_type = MIX
            .iter()
            .find(|(_, weight)| {
                if pick < *weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            })
            .map_or("user.login", |(t, _)| *t);
        // Skewed tenants: a few big communities, a long tail.
        let community_index =
            (self.rng.gen::<f64>().powi(3) * self.communities.len() as f64) as usize;
        let community = self.communities[community_index.min(self.communities.len() - 1)];
        let user_index = self.rng.gen_range(0..self.users.len());
        let user = self.users[user_index];
        let seconds = self.rng.gen_range(0..self.shape.days.max(1) * 86_400);
        let micros = self.rng.gen_range(0..1_000_000);
        let created_at =
            self.shape.end - TimeDelta::seconds(seconds) - TimeDelta::microseconds(micros);
        let event_id = random_uuid(&mut self.rng);
        let n: u32 = self.rng.gen_range(1..100_000);

        let base = NewEvent::new(event_type)
            .event_id(event_id)
            .created_at(created_at)
            .ip_address(format!(
                "10.{}.{}.{}",
                n % 250,
                (n / 250) % 250,
                user_index % 250
            ))
            .user_agent(AGENTS[user_index % AGENTS.len()]);
        match event_type {
            "user.signup" => base
                .user(user)
                .community(community)
                .metadata(json!({"email": format!("user{user_index}@example.com"), "source": "web", "plan": "free"})),
            "user.login" => base
                .user(user)
                .community(community)
                .metadata(json!({"method": if n.is_multiple_of(3) { "github" } else { "password" }, "mfa": n.is_multiple_of(5)})),
            "community.created" => base
                .user(user)
                .community(community)
                .entity("community", community.to_string())
                .metadata(json!({"name": format!("Community {community_index}"), "visibility": "public"})),
            "member.created" | "member.activated" => base
                .user(user)
                .community(community)
                .entity("member", format!("m-{n}"))
                .metadata(json!({"role": if n.is_multiple_of(10) { "admin" } else { "member" }})),
            "event.created" => base
                .user(user)
                .community(community)
                .entity("event", format!("e-{n}"))
                .metadata(json!({"title": format!("Meetup #{n}"), "online": n.is_multiple_of(2), "capacity": n % 500})),
            "hackathon.created" => base
                .user(user)
                .community(community)
                .entity("hackathon", format!("h-{n}"))
                .metadata(json!({"title": format!("Hack {n}"), "prizes": [100, 50, 25]})),
            "webhook.triggered" => NewEvent {
                user_id: None,
                ..base
                    .community(community)
                    .entity("webhook", format!("wh-{}", n % 40))
                    .metadata(json!({"status": if n.is_multiple_of(20) { 500 } else { 200 }, "duration_ms": n % 900}))
            },
            "github.push" => base
                .user(user)
                .community(community)
                .entity("repository", format!("org/repo-{}", n % 60))
                .metadata(json!({"commits": n % 12 + 1, "branch": "main", "forced": false})),
            _ => base
                .user(user)
                .community(community)
                .entity("pull_request", format!("org/repo-{}#{}", n % 60, n))
                .metadata(json!({"additions": n % 700, "deletions": n % 300, "draft": n.is_multiple_of(7)})),
        }
    }
}

/// A version-4 UUID from the seeded generator (not the OS's randomness), so
/// a seed reproduces the same ids.
fn random_uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_generated_event_is_valid_and_the_mix_is_covered() {
        let mut generator = Generator::new(Shape {
            duplicates: 0.1,
            ..Shape::default()
        });
        let now = Utc::now();
        let mut types = HashSet::new();
        let mut ids = HashSet::new();
        let mut repeats = 0;
        for _ in 0..10_000 {
            let event = generator.next_event().validate(now).unwrap();
            types.insert(event.event_type().to_string());
            if !ids.insert(event.event_id()) {
                repeats += 1;
            }
        }
        assert_eq!(types.len(), MIX.len());
        assert!((800..1200).contains(&repeats), "{repeats} repeats for 10%");
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let shape = Shape {
            seed: 7,
            ..Shape::default()
        };
        let a: Vec<_> = {
            let mut g = Generator::new(shape.clone());
            (0..50).map(|_| g.next_event()).collect()
        };
        let b: Vec<_> = {
            let mut g = Generator::new(shape);
            (0..50).map(|_| g.next_event()).collect()
        };
        assert_eq!(a, b);
    }
}
