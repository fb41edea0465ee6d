//! The core alone: events in, replies and actions out, with a clock the test moves by hand.
//! Waiters are plain numbers here.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn limits() -> Limits {
    Limits {
        min: 0,
        max: 2,
        concurrency: 1,
        max_invocations: 0,
        idle: Duration::ZERO,
        backoff: 100 * MS,
        backoff_max: 400 * MS,
    }
}

fn core(l: Limits) -> Core<u32> {
    Core::new("f".into(), l, Arc::new(Metrics::default()))
}

fn ready(id: &str) -> Ready {
    Ready {
        conn: Arc::new(Conn {
            instance_id: id.into(),
            invoke: "http://i/invoke".parse().unwrap(),
            health: "http://i/health".parse().unwrap(),
            endpoint: crate::h1::Endpoint::unix("@core-test"),
        }),
        prewarmed: false,
    }
}

/// The starts among `actions`, as `(seq, id)`.
fn starts(actions: &[Action<u32>]) -> Vec<(u64, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { seq, id } => Some((*seq, id.clone())),
            _ => None,
        })
        .collect()
}

fn grants(actions: &[Action<u32>]) -> Vec<(u32, u64, Option<Duration>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Grant { to, grant } => Some((*to, grant.seq, grant.cold)),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action<u32>]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { id } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn failed(actions: &[Action<u32>]) -> Vec<(u32, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fail { to, failure } => Some((*to, failure.error.code.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn waiters_are_served_in_order_as_instances_come_up_and_free_up() {
    let t0 = Instant::now();
    let mut c = core(limits());
    assert!(matches!(c.step(t0, Event::Acquire).reply, Reply::MustWait));
    let s = c.step(t0, Event::Wait(1));
    let first = starts(s.actions());
    assert_eq!(first.len(), 1, "one start for the first waiter");
    assert!(matches!(c.step(t0, Event::Acquire).reply, Reply::MustWait));
    let s = c.step(t0, Event::Wait(2));
    assert_eq!(
        starts(s.actions()).len(),
        1,
        "a second start: one is under way for one waiter"
    );
    assert!(matches!(c.step(t0, Event::Acquire).reply, Reply::MustWait));
    let s = c.step(t0, Event::Wait(3));
    assert!(starts(s.actions()).is_empty(), "maxInstances 2 reached");
    let Reply::Queued(third) = s.reply else {
        panic!("{:?}", s.reply)
    };
    // The first start ends after 30 ms: the first waiter gets it, cold.
    let t1 = t0 + 30 * MS;
    let s = c.step(
        t1,
        Event::Started {
            seq: first[0].0,
            result: Ok(ready("a")),
        },
    );
    assert!(matches!(s.reply, Reply::Watch));
    assert_eq!(grants(s.actions()), vec![(1, first[0].0, Some(30 * MS))]);
    // It frees up: the next in line gets it, warm.
    let s = c.step(
        t1,
        Event::Release {
            seq: first[0].0,
            broken: None,
        },
    );
    assert_eq!(grants(s.actions()), vec![(2, first[0].0, None)]);
    // Waiter 3 gave up meanwhile.
    assert!(matches!(
        c.step(t1, Event::Withdraw(third)).reply,
        Reply::Withdrawn(true)
    ));
    assert!(matches!(
        c.step(t1, Event::Withdraw(third)).reply,
        Reply::Withdrawn(false)
    ));
    assert_eq!(c.waiting(), 0);
}

#[test]
fn the_backoff_doubles_per_failure_up_to_its_cap_and_the_phase_says_so() {
    let t0 = Instant::now();
    let mut c = core(limits());
    let mut now = t0;
    for (n, delay) in [(1u32, 100u32), (2, 200), (3, 400), (4, 400), (5, 400)] {
        assert!(matches!(c.step(now, Event::Acquire).reply, Reply::MustWait));
        let s = c.step(now, Event::Wait(n));
        let (seq, _) = starts(s.actions())[0].clone();
        let s = c.step(
            now,
            Event::Started {
                seq,
                result: Err(StartFailure {
                    message: "boom".into(),
                    permanent: false,
                }),
            },
        );
        assert_eq!(failed(s.actions()), vec![(n, "STARTUP_ERROR".to_string())]);
        match c.phase() {
            Phase::Failing(f) => {
                assert_eq!(f.failures, n);
                assert_eq!(f.until, now + delay * MS);
                assert!(!f.permanent);
            }
            other => panic!("{other:?}"),
        }
        // Refused until the backoff ends, then a start is allowed again.
        assert!(matches!(
            c.step(now + (delay - 1) * MS, Event::Acquire).reply,
            Reply::Refused(_)
        ));
        now += delay * MS;
    }
    let s = c.step(now, Event::Wait(9));
    let (seq, _) = starts(s.actions())[0].clone();
    c.step(
        now,
        Event::Started {
            seq,
            result: Ok(ready("a")),
        },
    );
    assert_eq!(c.phase(), &Phase::Open);
}

#[test]
fn close_stops_what_runs_fails_waiters_and_is_idempotent() {
    let t0 = Instant::now();
    let mut c = core(Limits { max: 1, ..limits() });
    c.step(t0, Event::Acquire);
    let s = c.step(t0, Event::Wait(1));
    let (seq, _) = starts(s.actions())[0].clone();
    c.step(
        t0,
        Event::Started {
            seq,
            result: Ok(ready("a")),
        },
    );
    c.step(t0, Event::Acquire);
    c.step(t0, Event::Wait(2));
    let s = c.step(t0, Event::Close);
    assert!(matches!(s.reply, Reply::Closed { was_open: true }));
    assert_eq!(stops(s.actions()), vec!["a".to_string()]);
    assert_eq!(
        failed(s.actions()),
        vec![(2, "FUNCTION_REMOVED".to_string())]
    );
    assert_eq!(c.instances(t0)[0].state, InstanceState::Stopped);
    let s = c.step(t0, Event::Close);
    assert!(matches!(s.reply, Reply::Closed { was_open: false }));
    assert!(s.actions.is_none());
    // The lease comes back, the instance ends: it leaves the list, nothing more to stop.
    assert!(c
        .step(t0, Event::Release { seq, broken: None })
        .actions
        .is_none());
    c.step(
        t0,
        Event::Lost {
            seq,
            why: "stopped".into(),
        },
    );
    assert!(c.instances(t0).is_empty());
    assert!(
        matches!(c.step(t0, Event::Acquire).reply, Reply::Refused(f) if f.error.code == "FUNCTION_REMOVED")
    );
    assert!(matches!(c.step(t0, Event::Tick).reply, Reply::Timer(None)));
}

#[test]
fn the_timer_is_woken_only_when_an_instance_becomes_reapable() {
    let t0 = Instant::now();
    let mut c = core(Limits {
        min: 1,
        max: 2,
        idle: 1000 * MS,
        ..limits()
    });
    // The first tick starts minInstances; nothing to reap yet.
    let s = c.step(t0, Event::Tick);
    assert!(matches!(s.reply, Reply::Timer(None)));
    let (a, _) = starts(s.actions())[0].clone();
    c.step(
        t0,
        Event::Started {
            seq: a,
            result: Ok(ready("a")),
        },
    );
    assert!(matches!(c.step(t0, Event::Tick).reply, Reply::Timer(None)));
    // One instance, minInstances 1: a lease and its release wake nobody.
    let Reply::Leased(g) = c.step(t0, Event::Acquire).reply else {
        panic!()
    };
    let s = c.step(
        t0,
        Event::Release {
            seq: g.seq,
            broken: None,
        },
    );
    assert!(s.actions.is_none(), "{:?}", s.actions);
    // A second instance: its release, with no deadline armed, wakes the timer once.
    let Reply::Leased(_held) = c.step(t0, Event::Acquire).reply else {
        panic!()
    };
    c.step(t0, Event::Acquire);
    let s = c.step(t0, Event::Wait(1));
    let (b, _) = starts(s.actions())[0].clone();
    c.step(
        t0,
        Event::Started {
            seq: b,
            result: Ok(ready("b")),
        },
    );
    assert!(
        matches!(c.step(t0, Event::Tick).reply, Reply::Timer(None)),
        "both busy"
    );
    let t1 = t0 + 10 * MS;
    let s = c.step(
        t1,
        Event::Release {
            seq: b,
            broken: None,
        },
    );
    assert!(
        matches!(s.actions(), [Action::WakeTimer]),
        "{:?}",
        s.actions
    );
    assert!(
        matches!(c.step(t1, Event::Tick).reply, Reply::Timer(Some(at)) if at == t1 + 1000 * MS)
    );
    let Reply::Leased(g) = c.step(t1, Event::Acquire).reply else {
        panic!()
    };
    assert!(
        c.step(
            t1,
            Event::Release {
                seq: g.seq,
                broken: None
            }
        )
        .actions
        .is_none(),
        "already armed"
    );
    // At the deadline the idle one stops; the busy one stays.
    let s = c.step(t1 + 1000 * MS, Event::Tick);
    assert_eq!(stops(s.actions()), vec!["b".to_string()]);
    assert!(matches!(s.reply, Reply::Timer(None)));
}
