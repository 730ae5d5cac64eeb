//! Model checks of the hand-rolled lock-free [`RetryBudget`]: the
//! compare-and-swap loops on the ratio balance (an `f64`'s bits) and on the
//! floor's GCRA arrival time, the `stamp` of the last fold, the counters,
//! and refunds to the pool that paid. loom runs each scenario in every
//! interleaving (up to a preemption bound) under its model of weak memory,
//! where a load not ordered by a happens-before may read a stale value.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p steadfast-backoff --test loom --release
//! ```
//!
//! (Use a separate `CARGO_TARGET_DIR` to keep the normal build's artifacts.)
//! `LOOM_MAX_PREEMPTIONS` overrides the bound of 3 used here.
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use steadfast_backoff::{BudgetConfig, BudgetSnapshot, RetryBudget, Withdrawal};
use tokio::time::Instant;

fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut model = loom::model::Builder::new();
    if model.preemption_bound.is_none() {
        model.preemption_bound = Some(3);
    }
    model.check(f);
}

fn budget(ratio: f64, floor: u32, deposits: u32) -> (RetryBudget, Instant) {
    let t0 = Instant::now();
    let config = BudgetConfig::new().ratio(ratio).floor(floor);
    let budget = RetryBudget::new_at(config, t0).unwrap();
    for _ in 0..deposits {
        budget.deposit();
    }
    (budget, t0)
}

/// Withdraws at `now` until refused: the tokens granted.
fn drain(budget: &RetryBudget, now: Instant) -> u64 {
    let mut granted = 0;
    while budget.try_withdraw(now) {
        granted += 1;
    }
    granted
}

/// The budget's counters: (withdrawn, denied).
fn counters(budget: &RetryBudget) -> (u64, u64) {
    let BudgetSnapshot {
        withdrawn, denied, ..
    } = budget.snapshot();
    (withdrawn, denied)
}

/// Four deposits at a ratio of 0.5 make two tokens, one of them taken
/// (which folds the other into the balance), and the floor's burst is one
/// more: of three withdrawals racing at one instant, at most two win, and
/// the tokens the losers did not get are still there afterwards.
#[test]
fn concurrent_withdrawals_never_overspend() {
    check(|| {
        let (budget, t0) = budget(0.5, 1, 4);
        assert_eq!(budget.withdraw(t0), Some(Withdrawal::Ratio));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let budget = budget.clone();
                thread::spawn(move || u64::from(budget.try_withdraw(t0)))
            })
            .collect();
        let mut won = u64::from(budget.try_withdraw(t0));
        won += racers.into_iter().map(|r| r.join().unwrap()).sum::<u64>();
        assert!(won <= 2, "{won} withdrawals won with 2 tokens");
        assert_eq!(counters(&budget), (1 + won, 3 - won));
        assert_eq!(won + drain(&budget, t0), 2, "a token was lost");
    });
}

/// Both pools' tokens are taken, then given back on one thread while
/// another withdraws: whichever comes first, exactly the two tokens are to
/// be had at that instant, each once, and the counters agree.
#[test]
fn a_refund_racing_a_withdrawal_neither_loses_nor_duplicates_a_token() {
    check(|| {
        let (budget, t0) = budget(0.5, 1, 2);
        let ratio = budget.withdraw(t0);
        let floor = budget.withdraw(t0);
        let (Some(ratio), Some(floor)) = (ratio, floor) else {
            panic!("both pools pay: {ratio:?} {floor:?}");
        };
        assert_eq!(ratio, Withdrawal::Ratio);
        assert!(matches!(floor, Withdrawal::Floor { .. }));
        let refunder = {
            let budget = budget.clone();
            thread::spawn(move || {
                budget.refund_at(ratio, t0);
                budget.refund_at(floor, t0);
            })
        };
        let raced = u64::from(budget.try_withdraw(t0));
        refunder.join().unwrap();
        let drained = drain(&budget, t0);
        assert_eq!(raced + drained, 2, "tokens lost or duplicated");
        assert_eq!(counters(&budget), (2, 1 - raced + 1));
    });
}

/// Deposits land while two withdrawals fold them in: none is spent twice
/// nor dropped (four deposits at 0.5 are exactly two tokens, in all).
#[test]
fn deposits_racing_withdrawals_are_neither_lost_nor_spent_twice() {
    check(|| {
        let (budget, t0) = budget(0.5, 0, 0);
        let depositor = {
            let budget = budget.clone();
            thread::spawn(move || {
                for _ in 0..4 {
                    budget.deposit();
                }
            })
        };
        let withdrawer = {
            let budget = budget.clone();
            thread::spawn(move || u64::from(budget.try_withdraw(t0)))
        };
        let mut won = u64::from(budget.try_withdraw(t0));
        depositor.join().unwrap();
        won += withdrawer.join().unwrap();
        assert!(won <= 2);
        assert_eq!(
            won + drain(&budget, t0),
            2,
            "a deposit was lost or spent twice"
        );
    });
}

/// Folds at different instants race, each decaying the balance from the
/// stamp of the fold before it (the stamp is read before the balance and
/// written after it). Three tokens folded at 0 with a 1 s window: in
/// sequence, a withdrawal at 1 s finds 1.10 and takes one, leaving 0.10,
/// and one at 2 s then finds 0.04; in the other order, 0.41 and nothing.
/// Whatever stale values are read, never more than one of them wins.
#[test]
fn folds_at_different_instants_never_skip_the_decay() {
    check(|| {
        let t0 = Instant::now();
        let config = BudgetConfig::new()
            .ratio(1.0)
            .floor(0)
            .window(Duration::from_secs(1));
        let budget = RetryBudget::new_at(config, t0).unwrap();
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.try_withdraw(t0));
        let later = {
            let budget = budget.clone();
            thread::spawn(move || u64::from(budget.try_withdraw(t0 + Duration::from_secs(2))))
        };
        let won =
            u64::from(budget.try_withdraw(t0 + Duration::from_secs(1))) + later.join().unwrap();
        assert!(won <= 1, "{won} withdrawals won from 3 tokens decayed");
        let left = budget.balance(t0 + Duration::from_secs(2));
        assert!(left <= 3.0 * (-2f64).exp() + 1e-12, "{left}");
    });
}

/// The floor at one instant, withdrawals racing a withdraw-then-refund:
/// at most `floor` retries go out, the bucket's tokens are all there to
/// be had, and the counters agree.
#[test]
fn the_floor_never_lets_more_than_its_rate_through_at_one_instant() {
    check(|| {
        let (budget, t0) = budget(0.0, 2, 0);
        let canceller = {
            let budget = budget.clone();
            thread::spawn(move || {
                if let Some(paid) = budget.withdraw(t0) {
                    assert!(matches!(paid, Withdrawal::Floor { .. }));
                    budget.refund_at(paid, t0);
                }
            })
        };
        let mut sent = u64::from(budget.try_withdraw(t0));
        sent += u64::from(budget.try_withdraw(t0));
        canceller.join().unwrap();
        sent += drain(&budget, t0);
        assert_eq!(sent, 2, "the floor of 2 let {sent} through");
        assert_eq!(budget.snapshot().withdrawn, 2);
        // The next second's burst is the floor's again, no more.
        assert_eq!(drain(&budget, t0 + Duration::from_secs(1)), 2);
    });
}

/// A retry takes a floor token at 0 and waits; at 1 s the bucket is full
/// again (2) and another thread withdraws, while the waiting retry is
/// cancelled and refunds. "As if it had not been taken", at most 2 go out
/// at 1 s. This model found a bug: the refund moved the floor's schedule
/// back a whole interval whenever it landed, so after withdraw, withdraw,
/// refund a third went out. A floor token now says when its place in the
/// schedule ends, and a refund after that gives nothing back.
#[test]
fn a_late_refund_never_lets_more_than_the_floor_through_in_one_second() {
    check(|| {
        let (budget, t0) = budget(0.0, 2, 0);
        let stale = budget.withdraw(t0).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        let canceller = {
            let budget = budget.clone();
            thread::spawn(move || budget.refund_at(stale, t1))
        };
        let mut sent = 0;
        for _ in 0..3 {
            sent += u64::from(budget.try_withdraw(t1));
        }
        canceller.join().unwrap();
        assert!(
            sent <= 2,
            "the floor of 2 let {sent} through at one instant"
        );
    });
}
