//! Dry runs: whatever the table and the request, the plan is returned and nothing is applied.

use super::*;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]

    /// With dry run, whatever the table and the request, the plan is returned and nothing is
    /// applied: not the table, not the audit table.
    #[test]
    fn a_dry_run_changes_nothing(
        read in 1i64..400,
        write in 1i64..400,
        asked_read in proptest::option::of(1i64..1_000),
        asked_write in proptest::option::of(1i64..1_000),
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let setup = Setup::new().await;
            let table = TableSpec::provisioned("managed-dry", read, write)
                .create(&moto().dynamodb())
                .await;
            let mut payload = json!({"table": table, "dry_run": true});
            if let Some(value) = asked_read {
                payload["read"] = json!(value);
            }
            if let Some(value) = asked_write {
                payload["write"] = json!(value);
            }
            let report = run_scaler(&setup.scaler(&[]), payload).await;
            assert!(
                matches!(report.outcome, Outcome::Planned | Outcome::NoAction | Outcome::Skipped),
                "{report:?}"
            );
            assert!(report.actions.iter().all(|action| !action.applied && action.error.is_none()), "{report:?}");
            assert_eq!(report.outcome == Outcome::Planned, !report.actions.is_empty(), "{report:?}");
            assert!(report.audit_id.is_none(), "{report:?}");
            assert_eq!(capacity(&moto().dynamodb(), &table, None).await, (read, write));
            let records = moto()
                .dynamodb()
                .query()
                .table_name(&setup.audit)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(
                    ":pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("target#{}", table_key(&table))),
                )
                .send()
                .await
                .expect("query the audit table");
            assert_eq!(records.count(), 0);
        });
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]

    /// The same for the other runbooks that take a manual payload: a reservation, a stored
    /// limit, a function's timeout and memory — planned or declined, never applied.
    #[test]
    fn a_dry_run_of_any_raise_changes_nothing(
        reservation in 1i32..20,
        asked in proptest::option::of(1i32..40),
        limit in 1i64..1_000,
        asked_limit in proptest::option::of(1.0f64..5_000.0),
        longest_share in 0.0f64..1.0,
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let setup = Setup::new().await;
            let function = unique("managed-dry");
            create_function(moto(), &function).await;
            reserve(&function, reservation).await;
            let limits = unique("managed-dry-limits");
            runbook_tests::fixtures::create_limits_table(&moto().dynamodb(), &limits, limit).await;
            let (timeout, _) = function_settings(&function).await;
            put_durations(&function, &[f64::from(timeout) * 1000.0 * longest_share]).await;
            let before = (reserved(&function).await, function_settings(&function).await);
            let scaler = setup.scaler(&[
                ("LIMITS_TABLE", limits.as_str()),
                ("LIMITS_VALUE_ATTRS", "requests_per_second"),
            ]);
            let mut concurrency = json!({"function": function, "dry_run": true});
            if let Some(value) = asked {
                concurrency["reserved_concurrency"] = json!(value);
            }
            let mut stored = json!({"limit": {"key": "tenant#42", "attribute": "requests_per_second"}, "dry_run": true});
            if let Some(value) = asked_limit {
                stored["limit"]["value"] = json!(value);
            }
            let reports = vec![
                run_scaler(&scaler, concurrency).await,
                run_scaler(&scaler, stored).await,
                setup
                    .responder(&[])
                    .handle(
                        json!({"runbook": "lambda-resources", "function": function, "raise": "both", "dry_run": true}),
                        &invocation(),
                    )
                    .await,
            ];
            for report in &reports {
                assert!(
                    matches!(report.outcome, Outcome::Planned | Outcome::NoAction | Outcome::Skipped),
                    "{report:?}"
                );
                assert!(report.actions.iter().all(|a| !a.applied && a.error.is_none()), "{report:?}");
                assert_eq!(report.outcome == Outcome::Planned, !report.actions.is_empty(), "{report:?}");
                assert!(report.audit_id.is_none(), "{report:?}");
            }
            assert_eq!((reserved(&function).await, function_settings(&function).await), before);
            let item = moto()
                .dynamodb()
                .get_item()
                .table_name(&limits)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("tenant#42".into()))
                .send()
                .await
                .expect("limit");
            assert_eq!(
                item.item().and_then(|i| i.get("requests_per_second")).and_then(|v| v.as_n().ok()),
                Some(&limit.to_string())
            );
            // The account's pool is shared by every test of this binary.
            moto()
                .lambda()
                .delete_function_concurrency()
                .function_name(&function)
                .send()
                .await
                .expect("delete concurrency");
        });
    }
}
