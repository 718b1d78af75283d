//! The invariants every planning function keeps, over generated observations, configurations
//! and requests (no AWS involved: the plans are pure):
//! - a raise never lowers any value it sends; a scale-down never goes below the baseline;
//! - nothing it sends exceeds its cap, unless the current value already did (then it is kept);
//! - an Auto Scaling range only rises, and holds the capacity a raise asks for;
//! - the plan is a pure function of its inputs.
//!
//! Dry runs (the plan is returned, nothing applied) are checked against moto in never_worse.rs.

use alarm_responder::config::ResponderConfig;
use alarm_responder::lambda_resources::{self, Evidence, QueueLimit, Raise, Settings};
use limit_scaler::config::ScalerConfig;
use limit_scaler::dynamodb_capacity::{
    self, Billing, CapacityTarget, Change, ConsumedPeaks, Observed, Plan, Range, Ranges, Scaling,
    Side,
};
use limit_scaler::lambda_concurrency::{self, ConcurrencyTarget};
use limit_scaler::stored_limit;
use proptest::prelude::*;
use runbook_shared::config::Env;
use runbook_shared::model::Decision;

fn env(pairs: &[(String, String)]) -> Env<'_> {
    Env::new(move |name| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .or_else(|| match name {
                "AUDIT_TABLE" => Some("audit".into()),
                "AWS_REGION" => Some("us-east-1".into()),
                "ACCOUNT_ID" => Some("123456789012".into()),
                _ => None,
            })
    })
}

prop_compose! {
    fn scaler_config()(
        read_cap in 1i64..5_000,
        write_cap in 1i64..5_000,
        factor in 1.1f64..10.0,
        headroom in 1.0f64..5.0,
        allow_on_demand in any::<bool>(),
        max_reserved in 1i32..3_000,
        floor in 100i32..1_000,
        limit_factor in 1.0f64..100.0,
        utilization in 0.01f64..1.0,
    ) -> ScalerConfig {
        let pairs = vec![
            ("MAX_READ_CAPACITY".to_string(), read_cap.to_string()),
            ("MAX_WRITE_CAPACITY".into(), write_cap.to_string()),
            ("SCALE_FACTOR".into(), factor.to_string()),
            ("HEADROOM".into(), headroom.to_string()),
            ("ALLOW_ON_DEMAND".into(), allow_on_demand.to_string()),
            ("MAX_RESERVED_CONCURRENCY".into(), max_reserved.to_string()),
            ("UNRESERVED_CONCURRENCY_FLOOR".into(), floor.to_string()),
            ("MAX_LIMIT_FACTOR".into(), limit_factor.to_string()),
            ("SCALE_DOWN_UTILIZATION".into(), utilization.to_string()),
        ];
        ScalerConfig::from_env(&env(&pairs)).expect("generated configuration")
    }
}

/// A side as a request can ask for it: an exact value is within the cap (the request is
/// rejected otherwise, before any plan).
fn side(cap: i64) -> impl Strategy<Value = Side> {
    prop_oneof![
        Just(Side::Keep),
        Just(Side::Raise),
        (1..=cap).prop_map(Side::To)
    ]
}

fn observed() -> impl Strategy<Value = Observed> {
    (
        any::<bool>(),
        0i64..10_000,
        0i64..10_000,
        proptest::option::of(1i64..10_000),
        proptest::option::of(1i64..10_000),
    )
        .prop_map(|(provisioned, read, write, max_read, max_write)| Observed {
            table_status: "ACTIVE".into(),
            index_status: None,
            billing_mode: if provisioned {
                Billing::Provisioned
            } else {
                Billing::PayPerRequest
            },
            read,
            write,
            max_read_request_units: max_read,
            max_write_request_units: max_write,
        })
}

fn peaks() -> impl Strategy<Value = ConsumedPeaks> {
    (
        proptest::option::of(0.0f64..20_000.0),
        proptest::option::of(0.0f64..20_000.0),
    )
        .prop_map(|(read, write)| ConsumedPeaks {
            read_per_second: read,
            write_per_second: write,
        })
}

/// `new` may be sent for a side at `current` under `cap`: it never lowers, and it exceeds the
/// cap only by keeping a value that already did.
fn within(new: i64, current: i64, cap: i64) -> bool {
    new >= current && (new <= cap || new == current)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn capacity_raises_never_lower_and_respect_the_caps(
        config in scaler_config(),
        observed in observed(),
        peaks in peaks(),
        (read, write) in (1i64..5_000).prop_flat_map(|cap| (side(cap), side(cap))),
        factor in 1.1f64..10.0,
        switch in any::<bool>(),
    ) {
        // Exact values are validated against the configured caps before planning.
        let valid = |side: Side, cap: i64| match side {
            Side::To(value) => Side::To(value.min(cap)),
            other => other,
        };
        let target = CapacityTarget {
            table: "t".into(),
            index: None,
            read: valid(read, config.max_read_capacity),
            write: valid(write, config.max_write_capacity),
            factor,
            switch_to_on_demand: switch && read == Side::Raise && write == Side::Raise,
        };
        let decision = dynamodb_capacity::plan(&target, &observed, &peaks, &config);
        prop_assert_eq!(&decision, &dynamodb_capacity::plan(&target, &observed, &peaks, &config));
        if let Decision::Act(Plan { change, .. }) = decision {
            match change {
                Change::Provisioned { read, write } => {
                    prop_assert_eq!(observed.billing_mode, Billing::Provisioned);
                    prop_assert!(within(read, observed.read, config.max_read_capacity), "read {read} from {}", observed.read);
                    prop_assert!(within(write, observed.write, config.max_write_capacity), "write {write} from {}", observed.write);
                    prop_assert!(read > observed.read || write > observed.write);
                }
                Change::OnDemandMaximum { read, write } => {
                    prop_assert_eq!(observed.billing_mode, Billing::PayPerRequest);
                    for (new, current, cap) in [
                        (read, observed.max_read_request_units, config.max_read_capacity),
                        (write, observed.max_write_request_units, config.max_write_capacity),
                    ] {
                        match (new, current) {
                            // A side without a maximum is never given one by a raise.
                            (Some(_), None) => prop_assert!(false, "a maximum set where there was none"),
                            (None, Some(_)) => prop_assert!(false, "a maximum dropped"),
                            (Some(new), Some(current)) => prop_assert!(within(new, current, cap), "{new} from {current}"),
                            (None, None) => {}
                        }
                    }
                    prop_assert!(read > observed.max_read_request_units || write > observed.max_write_request_units);
                }
                Change::SwitchToOnDemand => {
                    prop_assert_eq!(observed.billing_mode, Billing::Provisioned);
                    prop_assert!(target.switch_to_on_demand || config.allow_on_demand);
                }
            }
        }
    }

    #[test]
    fn a_scale_down_never_goes_below_the_baseline_nor_up(
        config in scaler_config(),
        baseline in 1i64..5_000,
        current in 1i64..10_000,
        peak in proptest::option::of(0.0f64..20_000.0),
    ) {
        let next = dynamodb_capacity::step_down(current, baseline, peak, &config);
        prop_assert!(next <= current, "{next} above {current}");
        prop_assert!(next >= baseline.min(current), "{next} below the baseline {baseline}");
        prop_assert_eq!(next, dynamodb_capacity::step_down(current, baseline, peak, &config));
    }

    #[test]
    fn auto_scaling_ranges_never_lower_and_hold_the_raised_capacity(
        read in proptest::option::of((1i64..5_000, 0i64..5_000)),
        write in proptest::option::of((1i64..5_000, 0i64..5_000)),
        from in (1i64..5_000, 1i64..5_000),
        by in (0i64..5_000, 0i64..5_000),
    ) {
        let range = |(min, extra): (i64, i64)| Range { min, max: min + extra };
        let ranges = Ranges { read: read.map(range), write: write.map(range) };
        let to = (from.0 + by.0, from.1 + by.1);
        let Some(scaling) = Scaling::of(&ranges, from, to) else {
            // Nothing for Auto Scaling: no registered side rises.
            for (range, from, to) in [(ranges.read, from.0, to.0), (ranges.write, from.1, to.1)] {
                prop_assert!(range.is_none() || to <= from || range.is_some_and(|r| r.min >= to && r.max >= to));
            }
            return Ok(());
        };
        prop_assert_eq!(scaling.before, ranges);
        for (before, after, from, to) in [
            (ranges.read, scaling.after.read, from.0, to.0),
            (ranges.write, scaling.after.write, from.1, to.1),
        ] {
            prop_assert_eq!(before.is_some(), after.is_some(), "a side registered or dropped");
            if let (Some(before), Some(after)) = (before, after) {
                prop_assert!(after.min >= before.min && after.max >= before.max, "{before:?} -> {after:?}");
                prop_assert!(after.max >= after.min);
                if to > from {
                    prop_assert!(after.min >= to, "the raised capacity {to} below the new minimum {}", after.min);
                    prop_assert!(after.min == before.min.max(to), "the minimum rose past the raise");
                } else {
                    prop_assert_eq!(after, before);
                }
            }
        }
        prop_assert_eq!(Scaling::of(&ranges, from, to), Some(scaling));
    }

    #[test]
    fn concurrency_raises_never_lower_and_keep_the_cap_and_the_floor(
        config in scaler_config(),
        reserved in proptest::option::of(0i32..3_000),
        unreserved in 0i32..5_000,
        to in proptest::option::of(1i32..3_000),
    ) {
        let target = ConcurrencyTarget {
            function: "f".into(),
            to: to.map(|to| to.min(config.max_reserved_concurrency)),
        };
        let decision = lambda_concurrency::plan(&target, reserved, unreserved, 10_000, &config);
        prop_assert_eq!(&decision, &lambda_concurrency::plan(&target, reserved, unreserved, 10_000, &config));
        if let Decision::Act(new) = decision {
            let current = reserved.expect("only a reservation is raised");
            prop_assert!(new > current);
            prop_assert!(new <= config.max_reserved_concurrency);
            prop_assert!(unreserved - (new - current) >= config.unreserved_concurrency_floor);
            prop_assert!(current > 0 || target.to.is_some(), "an emergency stop lifted without a person");
        }
    }

    #[test]
    fn stored_limit_raises_never_lower_and_stay_under_the_factor(
        config in scaler_config(),
        original in 1.0f64..10_000.0,
        current in 0.0f64..1_000_000.0,
        requested in proptest::option::of(1.0f64..1_000_000.0),
    ) {
        let decision = stored_limit::plan("limit", current, original, requested, &config);
        prop_assert_eq!(&decision, &stored_limit::plan("limit", current, original, requested, &config));
        if let Decision::Act(new) = decision {
            prop_assert!(new > current);
            prop_assert!(new <= original * config.max_limit_factor);
        }
    }

    #[test]
    fn resource_raises_never_lower_respect_the_caps_and_need_evidence(
        timeout in 1i32..900,
        memory in 128i32..10_240,
        max_timeout in 1i32..900,
        max_memory in 128i32..10_240,
        raise in prop_oneof![Just(Raise::Timeout), Just(Raise::Memory), Just(Raise::Both)],
        longest in proptest::option::of(0.0f64..1_000_000.0),
        timeouts_logged in proptest::option::of(0usize..3),
        out_of_memory_logged in proptest::option::of(0usize..3),
        visibility in proptest::option::of(1i32..900),
    ) {
        let pairs = vec![
            ("MAX_TIMEOUT_SECONDS".to_string(), max_timeout.to_string()),
            ("MAX_MEMORY_MB".into(), max_memory.to_string()),
        ];
        let config = ResponderConfig::from_env(&env(&pairs)).expect("configuration");
        let settings = Settings {
            arn: String::new(),
            timeout,
            memory,
            last_update: "Successful".into(),
            revision: None,
            queue_limit: visibility.map(|visibility_timeout| QueueLimit {
                queue: "consumed".into(),
                visibility_timeout,
            }),
        };
        let evidence = Evidence { longest_ms: longest, timeouts_logged, out_of_memory_logged };
        let decision = lambda_resources::plan(&settings, raise, &evidence, &config);
        prop_assert_eq!(&decision, &lambda_resources::plan(&settings, raise, &evidence, &config));
        if let Decision::Act(change) = decision {
            if let Some((from, to)) = change.timeout {
                prop_assert_eq!(from, timeout);
                prop_assert!(to > from && to <= max_timeout);
                prop_assert!(visibility.is_none_or(|visibility| to <= visibility), "a timeout above a consumed queue's visibility timeout");
                prop_assert!(raise.timeout());
                prop_assert!(
                    longest.is_some_and(|ms| ms >= f64::from(timeout) * 1000.0 * lambda_resources::TIMEOUT_EVIDENCE_SHARE)
                        || timeouts_logged.is_some_and(|n| n > 0),
                    "a timeout raised without evidence"
                );
            }
            if let Some((from, to)) = change.memory {
                prop_assert_eq!(from, memory);
                prop_assert!(to > from && to <= max_memory);
                prop_assert!(raise.memory());
                prop_assert!(out_of_memory_logged.is_some_and(|n| n > 0), "memory raised without out-of-memory");
            }
        }
    }
}
