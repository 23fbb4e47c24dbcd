//! Matching speed of the subscription trie: one topic name against tries of 10k and 100k
//! subscriptions shaped like a sensor fleet (about 70% exact filters, 20% with `+`, 10% with
//! `#`). Every broker core runs this for every PUBLISH, so the number that matters is matches
//! per second per core. Also measures one subscribe + unsubscribe on the large trie.
//!
//! Run: `cargo bench --bench trie` (add `-- --measurement-time 3` to shorten it).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use surgemq::topic::SubscriptionTrie;

const SITES: u64 = 100;
const METRICS: [&str; 4] = ["temp", "humidity", "pressure", "battery"];

/// Deterministic so runs compare; the crate has no `rand` dependency to spend on a bench.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` subscriptions, one per client id, over 100 sites of `n / 100` devices each: exact
/// filters are mostly distinct, while each `+` and `#` filter is shared by 5 to 100 clients.
fn build(n: u64) -> SubscriptionTrie<u64, u8> {
    let devices = n / SITES; // 100 per site at 10k, 1000 at 100k
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut trie = SubscriptionTrie::new();
    for client in 0..n {
        let site = rng.below(SITES);
        let device = rng.below(devices);
        let metric = METRICS[rng.below(METRICS.len() as u64) as usize];
        let qos = rng.below(3) as u8;
        let filter = match rng.below(10) {
            0..=6 => format!("sensors/site{site}/dev{device}/{metric}"),
            7 | 8 => format!("sensors/+/dev{device}/{metric}"),
            _ => format!("sensors/site{site}/#"),
        };
        trie.insert(&filter, client, qos);
    }
    // Make sure the "several" topic below hits each kind of filter at least once.
    trie.insert("sensors/site7/dev42/temp", n, 1);
    trie.insert("sensors/+/dev42/temp", n + 1, 1);
    trie.insert("sensors/site7/#", n + 2, 1);
    trie
}

const TOPICS: [(&str, &str); 4] = [
    ("several", "sensors/site7/dev42/temp"),
    // Walks `sensors`, misses the site, follows `+` to the device, misses the metric.
    ("none_deep", "sensors/nosite/dev42/voltage"),
    ("none_root", "factory/line1/robot9/status"),
    ("none_sys", "$SYS/broker/clients/connected"),
];

fn count(trie: &SubscriptionTrie<u64, u8>, topic: &str) -> u64 {
    let mut matched = 0u64;
    trie.for_each_match(topic, |k, q| {
        matched = matched.wrapping_add(k ^ u64::from(*q))
    });
    matched
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("trie_match");
    group.throughput(Throughput::Elements(1));
    for n in [10_000u64, 100_000] {
        let trie = build(n);
        for (name, topic) in TOPICS {
            let mut entries = 0;
            trie.for_each_match(topic, |_, _| entries += 1);
            eprintln!(
                "{n} subscriptions ({} filters): {topic:?} matches {entries} entries",
                trie.filter_count()
            );
            group.bench_with_input(BenchmarkId::new(name, n), &topic, |b, topic| {
                b.iter(|| count(&trie, black_box(topic)))
            });
        }
    }
    group.finish();
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("trie_churn");
    group.throughput(Throughput::Elements(1));
    let mut trie = build(100_000);
    // A new filter (creates and prunes nodes) and a key joining a shared `+` filter.
    for (name, filter) in [
        ("new_filter", "sensors/site7/dev99999/temp"),
        ("shared_filter", "sensors/+/dev42/temp"),
    ] {
        group.bench_function(BenchmarkId::new(name, 100_000), |b| {
            b.iter(|| {
                trie.insert(black_box(filter), u64::MAX, 1);
                trie.remove(black_box(filter), &u64::MAX)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching, churn);
criterion_main!(benches);
