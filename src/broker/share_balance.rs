//! Round robin over a shared group whose members live on several shards, without sending
//! every other message across cores.
//!
//! Round robin promises each member an equal share of the group's messages. Taking turns
//! over the whole group from every shard keeps that promise but sends most messages to
//! another core, and crossing cores both ways cost a shared group 30% of its rate at 2 shards
//! (`perf/results/2026-12-03-shared-shape.md`). So a shard gives a message to the shard whose
//! members are furthest behind their share of what every shard gave the group, its own
//! shard first while its members are not ahead of theirs; within a shard, members take turns.
//! Publishers spread evenly over the shards then cost no hop at all, and a publisher alone on
//! one shard still sends the other shards' members their share.
//!
//! What each shard's members got is counted in [`GroupLoad`], one atomic per shard that every
//! shard's replica of the group shares ([`ShareLoads`] finds it by the group's full filter).
//! How far a shard's members may get ahead of their share before it sends its messages to
//! another shard, its lead, follows the group's rate on the shard: the messages it picks in
//! [`LEAD_TIME`], at most [`MAX_LEAD`]. Publishers send in bursts (a read brings a window of
//! them at once), so without a lead of about a burst, publishers spread evenly over the
//! shards would still cross half the time; at a few messages a second the lead is 0 and
//! members take turns strictly (two members on two shards alternate), and a burst of a few
//! hundred still reaches every member nearly equally. The rate is timed every [`WINDOW`]
//! picks. A shard writes its picks where the others see them, and reads theirs, every few
//! picks, half its lead, every [`WINDOW`] at most; with no lead, after every pick and again
//! before the next.
//!
//! A shard that falls behind by more than [`CAP`] (its members were busy or offline,
//! or have just joined) has its count raised to [`CAP`] behind, and one ahead by more is
//! lowered: a member that comes back gets at most that many extra messages, not a flood
//! making up for all it missed.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::protocol::ByteStr;

/// A shard's lead is what it picks for the group in this time...
pub const LEAD_TIME: Duration = Duration::from_micros(200);

/// ...up to this many messages (a burst: a publisher's window is often 100).
pub const MAX_LEAD: u64 = 96;

/// Picks between two timings of the rate.
pub const WINDOW: u32 = 32;

/// How far a shard's members may fall behind (or get ahead of) their share before the count
/// is forgiven.
pub const CAP: u64 = 1024;

/// A counter alone on its cache line, so shards counting for different shards do not
/// contend.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// What every shard gave the members on each shard, for one group.
pub struct GroupLoad {
    given: Box<[Padded]>,
}

/// The [`GroupLoad`] of every group, found by the group's full filter (`$share/G/F`). Every
/// shard holds it; a shard's replica asks for a group's when the group first gets a member.
pub struct ShareLoads {
    shards: usize,
    groups: Mutex<LoadTable>,
    /// Tests fix the lead instead of timing the rate.
    pinned: Option<u64>,
}

#[derive(Default)]
struct LoadTable {
    groups: AHashMap<ByteStr, Weak<GroupLoad>>,
    /// Groups there were after the last sweep of those no shard has any more.
    swept: usize,
}

impl ShareLoads {
    pub fn new(shards: usize) -> Arc<ShareLoads> {
        Arc::new(ShareLoads {
            shards,
            groups: Mutex::default(),
            pinned: None,
        })
    }

    /// Loads whose groups have this lead whatever their rate.
    #[cfg(test)]
    pub fn pinned(shards: usize, lead: u64) -> Arc<ShareLoads> {
        Arc::new(ShareLoads {
            shards,
            groups: Mutex::default(),
            pinned: Some(lead),
        })
    }

    /// A shard's view of the group's balance; None with a single shard, where there is
    /// nothing to balance.
    pub fn balance(&self, full: &ByteStr) -> Option<Balance> {
        if self.shards < 2 {
            return None;
        }
        let mut table = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let load = match table.groups.get(full).and_then(Weak::upgrade) {
            Some(load) => load,
            None => {
                if table.groups.len() >= 2 * table.swept.max(64) {
                    // Forget the groups that no shard has any more (now and then: a sweep
                    // per new group would make many groups quadratic).
                    table.groups.retain(|_, load| load.strong_count() > 0);
                    table.swept = table.groups.len();
                }
                let load = Arc::new(GroupLoad {
                    given: (0..self.shards).map(|_| Padded::default()).collect(),
                });
                table.groups.insert(full.clone(), Arc::downgrade(&load));
                load
            }
        };
        Some(Balance::new(load, self.pinned))
    }
}

/// One shard's view of a group's [`GroupLoad`], and its turns among each shard's members.
pub struct Balance {
    load: Arc<GroupLoad>,
    /// By shard.
    shards: Box<[ShardView]>,
    /// What the shards with members got: their `seen` and `unsent`.
    total: Cell<u64>,
    since_sync: Cell<u32>,
    /// Picks since the rate was last timed, and when that was.
    window: Cell<(u32, Instant)>,
    /// How far this shard's members may get ahead of their share (see the module).
    lead: Cell<u64>,
    pinned: Option<u64>,
}

/// What a shard knows of one shard's members of a group (kept together: every pick reads
/// them).
#[derive(Default)]
struct ShardView {
    /// The shared count as last read (this shard's own picks included once added).
    seen: Cell<u64>,
    /// This shard's picks for them not added to the shared count yet.
    unsent: Cell<u64>,
    /// Where this shard's turns among them go on.
    cursor: Cell<u32>,
}

impl ShardView {
    fn got(&self) -> u64 {
        self.seen.get() + self.unsent.get()
    }
}

impl Balance {
    fn new(load: Arc<GroupLoad>, pinned: Option<u64>) -> Balance {
        Balance {
            shards: (0..load.given.len())
                .map(|_| ShardView::default())
                .collect(),
            total: Cell::new(0),
            since_sync: Cell::new(0),
            window: Cell::new((0, Instant::now())),
            lead: Cell::new(pinned.unwrap_or(0)),
            pinned,
            load,
        }
    }

    /// The shards of the broker.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard whose members get the next message picked on `here`, given how many of the
    /// group's `members` are on each shard (`on[s]`).
    ///
    /// Shares compare as got/total against on/members, in integers: got * members against
    /// total * on. (Saturating: 2^64 takes centuries of messages even times many members.)
    pub fn shard_for(&self, here: usize, on: &[u32], members: u32) -> usize {
        let lead = self.lead.get();
        if lead == 0 {
            // No lead to absorb what the others picked since this shard last read their
            // counts (after its own last pick): read them now. Else publishers taking turns
            // on two shards, slowly, see each other one pick late, and a third of their
            // messages cross.
            self.sync(on, members);
        }
        let members = u64::from(members);
        let total = self.total.get();
        let share = |n: u32| total.saturating_mul(u64::from(n));
        if let (Some(&n), Some(view)) = (on.get(here), self.shards.get(here)) {
            if n > 0 && view.got().saturating_mul(members) <= share(n) + lead * members {
                return here;
            }
        }
        // The shard furthest behind its share.
        let mut best = here;
        let mut best_behind = i128::MIN;
        for (s, (&n, view)) in on.iter().zip(self.shards.iter()).enumerate() {
            if n == 0 || s == here {
                continue;
            }
            let behind = i128::from(share(n)) - i128::from(view.got().saturating_mul(members));
            if behind > best_behind {
                best = s;
                best_behind = behind;
            }
        }
        best
    }

    /// Position `here` takes its next turn from among shard `s`'s `len` members.
    pub fn turn(&self, s: usize, len: u32) -> u32 {
        let at = self.shards.get(s).map_or(0, |view| view.cursor.get());
        if at >= len {
            0
        } else {
            at
        }
    }

    /// A member on shard `s` got a message, the one at `position` among that shard's
    /// members; `on` as for [`shard_for`](Self::shard_for).
    pub fn count(&self, s: usize, position: u32, on: &[u32], members: u32) {
        let Some(view) = self.shards.get(s) else {
            return;
        };
        view.cursor.set(position + 1);
        view.unsent.set(view.unsent.get() + 1);
        self.total.set(self.total.get() + 1);
        let (picks, since) = self.window.get();
        if picks + 1 >= WINDOW && self.pinned.is_none() {
            let now = Instant::now();
            let took = now.duration_since(since).as_nanos().max(1);
            let lead = u128::from(WINDOW) * LEAD_TIME.as_nanos() / took;
            self.lead.set((lead as u64).min(MAX_LEAD));
            self.window.set((0, now));
        } else {
            self.window.set((picks + 1, since));
        }
        // Others' picks not seen yet look like a lead here: seen often enough, they stay
        // within it.
        let every = (self.lead.get() / 2).clamp(1, u64::from(WINDOW));
        let picks = self.since_sync.get() + 1;
        if u64::from(picks) >= every {
            self.sync(on, members);
        } else {
            self.since_sync.set(picks);
        }
    }

    /// Adds this shard's picks to the shared counts, reads everyone's, and brings a shard
    /// more than [`CAP`] away from its share back to [`CAP`] away.
    fn sync(&self, on: &[u32], members: u32) {
        self.since_sync.set(0);
        let shards = || self.load.given.iter().zip(self.shards.iter());
        for (counter, view) in shards() {
            let unsent = view.unsent.replace(0);
            let now = if unsent > 0 {
                counter.0.fetch_add(unsent, Ordering::Relaxed) + unsent
            } else {
                counter.0.load(Ordering::Relaxed)
            };
            view.seen.set(now);
        }
        // A shard without members takes nothing: what it got once no longer counts.
        let on = |s: usize| on.get(s).copied().unwrap_or(0);
        let in_group: u64 = shards()
            .enumerate()
            .filter(|(s, _)| on(*s) > 0)
            .map(|(_, (_, view))| view.seen.get())
            .sum();
        if members > 0 {
            for (s, (counter, view)) in shards().enumerate() {
                let seen = view.seen.get();
                let wanted = if on(s) > 0 {
                    let share =
                        (u128::from(in_group) * u128::from(on(s)) / u128::from(members)) as u64;
                    seen.clamp(share.saturating_sub(CAP), share + CAP)
                } else {
                    0
                };
                // Only if nobody counted since it was read: a pick lost to a stale
                // correction would be one more message away from fair.
                if wanted != seen
                    && counter
                        .0
                        .compare_exchange(seen, wanted, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    view.seen.set(wanted);
                }
            }
        }
        // The shares are of what the shards with members got.
        let total = shards()
            .enumerate()
            .filter(|(s, _)| on(*s) > 0)
            .map(|(_, (_, view))| view.seen.get())
            .sum();
        self.total.set(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Picks `n` messages on shard `here`, members `on` per shard; returns each shard's.
    fn run(balance: &Balance, here: usize, on: &[u32], n: usize, got: &mut [u64]) {
        let members = on.iter().sum();
        for _ in 0..n {
            let s = balance.shard_for(here, on, members);
            let position = balance.turn(s, on[s]);
            balance.count(s, position, on, members);
            got[s] += 1;
        }
    }

    fn pair() -> (Balance, Balance) {
        let loads = ShareLoads::pinned(2, MAX_LEAD);
        let key = ByteStr::from("$share/g/t/#");
        (loads.balance(&key).unwrap(), loads.balance(&key).unwrap())
    }

    #[test]
    fn a_quiet_group_takes_turns_strictly_across_shards() {
        let loads = ShareLoads::pinned(2, 0);
        let key = ByteStr::from("$share/g/t/#");
        let (zero, one) = (loads.balance(&key).unwrap(), loads.balance(&key).unwrap());
        // One member on each shard, a publisher on shard 1 and then one on shard 0: they
        // alternate from the first message on.
        let on = [1, 1];
        let mut order = Vec::new();
        for (balance, here) in [(&one, 1), (&zero, 0)] {
            for _ in 0..6 {
                let s = balance.shard_for(here, &on, 2);
                balance.count(s, 0, &on, 2);
                order.push(s);
            }
        }
        assert_eq!(order, [1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn a_quiet_group_with_publishers_taking_turns_on_both_shards_never_crosses() {
        let loads = ShareLoads::pinned(2, 0);
        let key = ByteStr::from("$share/g/t/#");
        let (zero, one) = (loads.balance(&key).unwrap(), loads.balance(&key).unwrap());
        let on = [2, 2];
        let (mut from_zero, mut from_one) = ([0; 2], [0; 2]);
        for _ in 0..1000 {
            run(&zero, 0, &on, 1, &mut from_zero);
            run(&one, 1, &on, 1, &mut from_one);
        }
        assert_eq!((from_zero, from_one), ([1000, 0], [0, 1000]));
    }

    #[test]
    fn the_lead_follows_the_rate() {
        let loads = ShareLoads::new(2);
        let key = ByteStr::from("$share/g/t/#");
        let balance = loads.balance(&key).unwrap();
        let on = [1, 1];
        // A pick every two LEAD_TIMEs: no lead, and every pick is counted where all shards
        // see it.
        for _ in 0..2 * WINDOW {
            balance.count(0, 0, &on, 2);
            std::thread::sleep(2 * LEAD_TIME);
        }
        assert_eq!(balance.lead.get(), 0);
        assert_eq!(loads_given(&balance), [u64::from(2 * WINDOW), 0]);
        // Far faster (no pause at all): a lead, up to MAX_LEAD. (A window stretched past
        // WINDOW * LEAD_TIME by the test thread losing its core is timed again.)
        for _ in 0..100 {
            for _ in 0..WINDOW {
                balance.count(0, 0, &on, 2);
            }
            if balance.lead.get() > 0 {
                break;
            }
        }
        assert!(balance.lead.get() > 0);
        assert!(balance.lead.get() <= MAX_LEAD);
    }

    fn loads_given(balance: &Balance) -> Vec<u64> {
        balance
            .load
            .given
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn a_single_shard_has_nothing_to_balance() {
        assert!(ShareLoads::new(1)
            .balance(&ByteStr::from("$share/g/t"))
            .is_none());
    }

    #[test]
    fn equal_publishers_on_both_shards_never_cross() {
        let (zero, one) = pair();
        let on = [2, 2];
        let mut from_zero = [0; 2];
        let mut from_one = [0; 2];
        for _ in 0..1000 {
            run(&zero, 0, &on, 10, &mut from_zero);
            run(&one, 1, &on, 10, &mut from_one);
        }
        assert_eq!(from_zero, [10_000, 0]);
        assert_eq!(from_one, [0, 10_000]);
    }

    #[test]
    fn a_publisher_alone_on_one_shard_gives_every_shard_its_share() {
        let (zero, _one) = pair();
        // One member here, three on the other shard: a quarter stays.
        let on = [1, 3];
        let mut got = [0; 2];
        run(&zero, 0, &on, 100_000, &mut got);
        let here = got[0] as f64 / 100_000.0;
        assert!((0.24..0.26).contains(&here), "{got:?}");
    }

    #[test]
    fn uneven_publishers_cross_only_for_the_difference() {
        let (zero, one) = pair();
        let on = [2, 2];
        let mut from_zero = [0; 2];
        let mut from_one = [0; 2];
        for _ in 0..1000 {
            run(&zero, 0, &on, 30, &mut from_zero);
            run(&one, 1, &on, 10, &mut from_one);
        }
        // 40,000 in all, 20,000 for each shard's members: shard 0 sends the other 10,000.
        let first = from_zero[0] + from_one[0];
        assert!(
            (19_800..20_200).contains(&first),
            "{from_zero:?} {from_one:?}"
        );
        assert_eq!(from_one[0], 0, "the shard behind keeps its own");
        assert!((9_800..10_200).contains(&from_zero[1]), "{from_zero:?}");
    }

    #[test]
    fn members_that_come_back_get_at_most_cap_extra() {
        let (zero, one) = pair();
        let mut from_zero = [0; 2];
        let mut from_one = [0; 2];
        // Shard 1's members away: shard 0's take everything.
        run(&zero, 0, &[2, 0], 50_000, &mut from_zero);
        run(&one, 1, &[2, 0], 10, &mut from_one);
        assert_eq!(from_zero[1] + from_one[1], 0);
        // Back, with equal publishers: shard 1's members are behind by at most CAP (plus
        // the picks not counted yet), not by 50,000.
        let (mut a, mut b) = ([0; 2], [0; 2]);
        for _ in 0..100 {
            run(&zero, 0, &[2, 2], 32, &mut a);
            run(&one, 1, &[2, 2], 32, &mut b);
        }
        let crossed = a[1];
        assert!(crossed <= CAP + 2 * u64::from(WINDOW), "{a:?} {b:?}");
        assert!(crossed > 0, "shard 1 got something back: {a:?}");
        assert_eq!(b[0], 0, "{b:?}");
    }
}
