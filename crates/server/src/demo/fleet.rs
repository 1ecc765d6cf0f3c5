//! The simulated fleet of the demo: about 200 charging points across France
//! whose status changes, with occasional alarms. Deterministic (seeded), so a
//! demo run and its browser test see the same kind of traffic every time.

use serde::Serialize;

/// Cities the charging points are spread around: (name, latitude, longitude).
const CITIES: [(&str, f64, f64); 24] = [
    ("Paris", 48.857, 2.352),
    ("Lyon", 45.764, 4.836),
    ("Marseille", 43.296, 5.370),
    ("Toulouse", 43.605, 1.444),
    ("Nice", 43.710, 7.262),
    ("Nantes", 47.218, -1.554),
    ("Strasbourg", 48.573, 7.752),
    ("Montpellier", 43.611, 3.877),
    ("Bordeaux", 44.838, -0.579),
    ("Lille", 50.629, 3.057),
    ("Rennes", 48.117, -1.678),
    ("Reims", 49.258, 4.032),
    ("Le Havre", 49.494, 0.108),
    ("Dijon", 47.322, 5.041),
    ("Grenoble", 45.188, 5.724),
    ("Angers", 47.478, -0.563),
    ("Brest", 48.390, -4.486),
    ("Tours", 47.394, 0.685),
    ("Limoges", 45.834, 1.261),
    ("Clermont-Ferrand", 45.778, 3.087),
    ("Perpignan", 42.699, 2.895),
    ("Metz", 49.119, 6.176),
    ("Caen", 49.182, -0.370),
    ("Pau", 43.295, -0.370),
];

/// Statuses a charging point moves between.
pub const STATUSES: [&str; 4] = ["available", "charging", "offline", "fault"];
/// Alarm levels, from least to most severe.
pub const LEVELS: [&str; 3] = ["minor", "major", "critical"];

/// One charging point, as the backend's REST API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Borne {
    /// `B1`, `B2`, …
    pub uid: String,
    /// The nearest city.
    pub city: &'static str,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// One of [`STATUSES`].
    pub status: &'static str,
    /// Rated power.
    pub power_kw: u32,
}

/// One change the simulator produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A point changed status.
    Status(Borne),
    /// An alarm on a point.
    Alarm {
        /// The point.
        uid: String,
        /// One of [`LEVELS`].
        level: &'static str,
        /// Human text.
        message: &'static str,
    },
}

impl Change {
    /// The point it is about.
    pub fn uid(&self) -> &str {
        match self {
            Change::Status(b) => &b.uid,
            Change::Alarm { uid, .. } => uid,
        }
    }
}

/// A small xorshift generator: the demo needs variety, not cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A float in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.below(2000) as f64 - 1000.0) / 1000.0
    }
}

/// The fleet and its simulator.
#[derive(Debug, Clone)]
pub struct Fleet {
    bornes: Vec<Borne>,
    rng: Rng,
}

const ALARM_TEXTS: [&str; 4] = [
    "connector temperature high",
    "payment terminal unreachable",
    "ground fault detected",
    "door opened",
];

impl Fleet {
    /// `size` points around the cities, seeded.
    pub fn new(size: usize, seed: u64) -> Fleet {
        let mut rng = Rng::new(seed);
        let bornes = (1..=size)
            .map(|i| {
                let (city, lat, lon) = CITIES[(i - 1) % CITIES.len()];
                Borne {
                    uid: format!("B{i}"),
                    city,
                    lat: lat + rng.unit() * 0.25,
                    lon: lon + rng.unit() * 0.35,
                    status: STATUSES[rng.below(2)],
                    power_kw: [22, 50, 150, 350][rng.below(4)],
                }
            })
            .collect();
        Fleet { bornes, rng }
    }

    /// Every point, as it is now.
    pub fn bornes(&self) -> &[Borne] {
        &self.bornes
    }

    /// Sets point `uid`'s status (a command did it); the point as it is
    /// now, if it exists.
    pub fn set_status(&mut self, uid: &str, status: &'static str) -> Option<Borne> {
        let borne = self.bornes.iter_mut().find(|b| b.uid == uid)?;
        borne.status = status;
        Some(borne.clone())
    }

    /// Point `uid` as it is now.
    pub fn borne(&self, uid: &str) -> Option<&Borne> {
        self.bornes.iter().find(|b| b.uid == uid)
    }

    /// The next change. Borne B1 (the demo's "Roger" watches it) changes
    /// more often than the others so that its page is never idle for long.
    pub fn step(&mut self) -> Change {
        let index = if self.rng.below(8) == 0 {
            0
        } else {
            self.rng.below(self.bornes.len())
        };
        if self.rng.below(6) == 0 {
            let level = LEVELS[self.rng.below(LEVELS.len())];
            return Change::Alarm {
                uid: self.bornes[index].uid.clone(),
                level,
                message: ALARM_TEXTS[self.rng.below(ALARM_TEXTS.len())],
            };
        }
        let borne = &mut self.bornes[index];
        // Mostly available/charging; offline and fault are rarer.
        borne.status = match self.rng.below(10) {
            0 => "offline",
            1 => "fault",
            2..=5 => "charging",
            _ => "available",
        };
        Change::Status(borne.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_is_in_france_and_changes() {
        let mut fleet = Fleet::new(200, 7);
        assert_eq!(fleet.bornes().len(), 200);
        assert!(
            fleet
                .bornes()
                .iter()
                .all(|b| (41.0..51.5).contains(&b.lat) && (-5.5..10.0).contains(&b.lon))
        );
        let changes: Vec<Change> = (0..500).map(|_| fleet.step()).collect();
        assert!(changes.iter().any(|c| matches!(
            c,
            Change::Alarm {
                level: "critical",
                ..
            }
        )));
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, Change::Status(b) if b.uid == "B1"))
        );
    }
}
