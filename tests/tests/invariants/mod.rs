//! The promises of docs/invariants.md tried at random: seeded generators of event sequences,
//! each run against moto with the invariants checked after every step. A violation prints its
//! seed and the shortest sequence found that still violates.
//!
//! Two worlds: limit-scaler's tables and reservation (`scaler`), and dlq-redriver's queues with
//! their producer and consumer (`queues`). Bounded here (`INVARIANT_STEPS`, default 300 steps
//! each, about a minute); longer with `scripts/soak.sh --steps N --seed S`.

mod queues;
mod scaler;

use std::fmt::Debug;

/// A small, seeded, reproducible generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// A set of resources, the functions that act on them, and what the checker knows of them.
// The tests run on one thread: no auto-trait bound is wanted on these futures.
#[allow(async_fn_in_trait)]
pub trait World: Sized {
    type Step: Copy + Debug;
    /// The settings a sequence runs under (chosen once per sequence), as in `Self::new`.
    type Setting: Copy + Debug;

    fn setting(rng: &mut Rng) -> Self::Setting;
    fn step(rng: &mut Rng) -> Self::Step;
    /// Fresh resources (random names) for one sequence.
    async fn new(setting: Self::Setting) -> Self;
    /// Runs one step; the invariants it broke, each said in a sentence.
    async fn run(&mut self, step: Self::Step) -> Vec<String>;
}

/// Runs `steps` on a fresh world; the first step that breaks an invariant, and how.
async fn first_violation<W: World>(
    setting: W::Setting,
    steps: &[W::Step],
) -> Option<(usize, Vec<String>)> {
    let mut world = W::new(setting).await;
    for (index, step) in steps.iter().enumerate() {
        let broken = world.run(*step).await;
        if !broken.is_empty() {
            return Some((index, broken));
        }
    }
    None
}

/// The shortest prefix-and-removal of `steps` that still violates (greedy: drop one step at a
/// time while the sequence still breaks an invariant).
async fn shrink<W: World>(setting: W::Setting, mut steps: Vec<W::Step>) -> Vec<W::Step> {
    let mut i = 0;
    while i < steps.len() {
        let mut fewer = steps.clone();
        fewer.remove(i);
        if Box::pin(first_violation::<W>(setting, &fewer))
            .await
            .is_some()
        {
            steps = fewer;
        } else {
            i += 1;
        }
    }
    steps
}

fn from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Runs `INVARIANT_STEPS` steps of `W` from `INVARIANT_SEED` (or a new seed), in sequences of
/// 30 steps on fresh resources; panics with the seed and the shortest failing sequence.
async fn try_at_random<W: World>(name: &str) {
    let total = from_env("INVARIANT_STEPS", 300) as usize;
    let seed = from_env(
        "INVARIANT_SEED",
        u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1),
    );
    let per_sequence = 30;
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < total {
        let setting = W::setting(&mut rng);
        let steps: Vec<W::Step> = (0..per_sequence.min(total - done))
            .map(|_| W::step(&mut rng))
            .collect();
        if let Some((at, broken)) = Box::pin(first_violation::<W>(setting, &steps)).await {
            let shortest = shrink::<W>(setting, steps[..=at].to_vec()).await;
            panic!(
                "{name}, seed {seed}, {setting:?}: {broken:?}\nshortest sequence that still violates ({} steps): {shortest:?}",
                shortest.len()
            );
        }
        done += steps.len();
    }
    println!(
        "invariants of {name}: {done} steps from seed {seed}, every invariant checked after each, 0 violations"
    );
}
