//! alarm-responder never undoes a deploy, and changes nothing a configuration change cannot reach.

use super::*;

#[tokio::test]
async fn lambda_resources_never_undoes_a_concurrent_deploy() {
    let setup = Setup::new().await;
    let function = unique("managed-deploying");
    // The function really does run into its timeout (29 s of 30 after the deploy).
    put_durations(&function, &[29_000.0, 12_000.0]).await;
    let conflicted = Arc::new(AtomicUsize::new(0));
    let applied = Arc::new(AtomicUsize::new(0));
    let get = mock!(aws_sdk_lambda::Client::get_function_configuration).then_output({
        let (function, conflicted, applied) =
            (function.clone(), conflicted.clone(), applied.clone());
        move || {
            if applied.load(Ordering::SeqCst) > 0 {
                function_configuration(&function, 45, 1024, LastUpdateStatus::Successful, "r3")
            } else if conflicted.load(Ordering::SeqCst) > 0 {
                // A deploy landed meanwhile: memory 512 -> 1024, timeout 10 -> 30.
                function_configuration(&function, 30, 1024, LastUpdateStatus::Successful, "r2")
            } else {
                function_configuration(&function, 10, 512, LastUpdateStatus::Successful, "r1")
            }
        }
    });
    let conflict = mock!(aws_sdk_lambda::Client::update_function_configuration)
        .match_requests({
            let conflicted = conflicted.clone();
            move |_| conflicted.load(Ordering::SeqCst) == 0
        })
        .then_error({
            let conflicted = conflicted.clone();
            move || {
                conflicted.fetch_add(1, Ordering::SeqCst);
                UpdateFunctionConfigurationError::ResourceConflictException(
                    aws_sdk_lambda::types::error::ResourceConflictException::builder()
                        .message("An update is in progress")
                        .meta(
                            aws_sdk_lambda::error::ErrorMetadata::builder()
                                .code("ResourceConflictException")
                                .message("An update is in progress")
                                .build(),
                        )
                        .build(),
                )
            }
        });
    let replanned = mock!(aws_sdk_lambda::Client::update_function_configuration)
        .match_requests(|request| {
            request.timeout() == Some(45)
                && request.memory_size().is_none()
                && request.revision_id() == Some("r2")
        })
        .then_output({
            let applied = applied.clone();
            move || {
                applied.fetch_add(1, Ordering::SeqCst);
                UpdateFunctionConfigurationOutput::builder().build()
            }
        });
    let no_aliases = mock!(aws_sdk_lambda::Client::list_aliases).then_output(|| {
        aws_sdk_lambda::operation::list_aliases::ListAliasesOutput::builder().build()
    });
    let no_queues = mock!(aws_sdk_lambda::Client::list_event_source_mappings).then_output(|| {
        aws_sdk_lambda::operation::list_event_source_mappings::ListEventSourceMappingsOutput::builder()
            .build()
    });
    let quiet = runbook_tests::replay::QuietFunction::new();
    let lambda = mock_client!(
        aws_sdk_lambda,
        RuleMode::MatchAny,
        [
            &get,
            &conflict,
            &replanned,
            &no_aliases,
            &no_queues,
            &quiet.versions
        ]
    );
    let responder = setup.responder_with(&[], lambda);
    let report = responder
        .handle(
            lambda_alarm_event(
                &format!("{function}-duration"),
                "ALARM",
                "Duration",
                &function,
                None,
            ),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert_eq!(replanned.num_calls(), 1, "{report:?}");
    assert_eq!(report.actions[0].before, json!({"timeout_seconds": 30}));
    assert_eq!(report.actions[0].after, json!({"timeout_seconds": 45}));
}

#[tokio::test]
async fn a_duration_alarm_on_an_alias_changes_nothing_under_it() {
    let setup = Setup::new().await;
    let function = unique("managed-aliased");
    create_deployed_function(moto(), &function, "2").await;
    put_durations(&function, &[2_950.0]).await;
    let before = function_settings(&function).await;
    let report = setup
        .responder(&[])
        .handle(
            lambda_alarm_event(
                &format!("{function}-live-duration"),
                "ALARM",
                "Duration",
                &function,
                Some("live"),
            ),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("version 2") && report.reason.contains("publish"),
        "{}",
        report.reason
    );
    assert_eq!(function_settings(&function).await, before);
}

#[tokio::test]
async fn a_duration_alarm_on_a_function_behind_aliases_changes_nothing() {
    let setup = Setup::new().await;
    let function = unique("managed-behind");
    create_deployed_function(moto(), &function, "2").await;
    put_durations(&function, &[2_950.0]).await;
    let before = function_settings(&function).await;
    let responder = setup.responder(&[("COOLDOWN_SECONDS", "0")]);
    // The alarm names the function alone, but its traffic runs through `live` on version 2.
    let report = responder
        .handle(
            lambda_alarm_event(
                &format!("{function}-duration"),
                "ALARM",
                "Duration",
                &function,
                None,
            ),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("alias live on version 2"),
        "{}",
        report.reason
    );
    assert_eq!(function_settings(&function).await, before);
    // A person who names $LATEST gets it changed.
    let report = responder
        .handle(
            json!({"runbook": "lambda-resources", "function": format!("{function}:$LATEST")}),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(function_settings(&function).await.0 > before.0);
}

#[tokio::test]
async fn a_latency_alarm_does_not_raise_the_timeout() {
    let setup = Setup::new().await;
    let responder = setup.responder(&[("COOLDOWN_SECONDS", "0")]);
    let slow = unique("managed-latency");
    create_function(moto(), &slow).await;
    let (timeout, _) = function_settings(&slow).await;
    // Slow, but nowhere near its timeout.
    put_durations(&slow, &[f64::from(timeout) * 1000.0 * 0.4]).await;
    let alarm = |function: &str| {
        lambda_alarm_event(
            &format!("{function}-duration"),
            "ALARM",
            "Duration",
            function,
            None,
        )
    };
    let report = responder.handle(alarm(&slow), &invocation()).await;
    assert_eq!(report.outcome, Outcome::NoAction, "{report:?}");
    assert!(
        report.reason.contains("latency, not timeouts"),
        "{}",
        report.reason
    );
    assert_eq!(function_settings(&slow).await.0, timeout);

    // Running into its timeout: raised.
    let timing_out = unique("managed-timeouts");
    create_function(moto(), &timing_out).await;
    put_durations(&timing_out, &[f64::from(timeout) * 1000.0 * 0.95]).await;
    let report = responder.handle(alarm(&timing_out), &invocation()).await;
    assert_eq!(report.outcome, Outcome::Remediated, "{report:?}");
    assert!(function_settings(&timing_out).await.0 > timeout);
}

/// The rollback writes the alias only on the revision it read: a deploy that moved the alias
/// meanwhile is not undone. It plans once more from a fresh read, then leaves the alias to
/// whoever is changing it.
#[tokio::test]
async fn a_rollback_never_undoes_a_concurrent_alias_move() {
    use aws_sdk_lambda::operation::update_alias::UpdateAliasError;
    use aws_sdk_lambda::types::FunctionConfiguration;
    let setup = Setup::new().await;
    let function = unique("managed-moving");
    runbook_tests::fixtures::served_through(moto(), &function, "live", "1").await;
    let reads = Arc::new(AtomicUsize::new(0));
    let get_alias = mock!(aws_sdk_lambda::Client::get_alias).then_output({
        let (function, reads) = (function.clone(), reads.clone());
        move || {
            let revision = format!("r{}", reads.fetch_add(1, Ordering::SeqCst) + 1);
            aws_sdk_lambda::operation::get_alias::GetAliasOutput::builder()
                .alias_arn(format!(
                    "arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function}:live"
                ))
                .name("live")
                .function_version("2")
                .revision_id(revision)
                .build()
        }
    });
    let published = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string();
    let versions = mock!(aws_sdk_lambda::Client::list_versions_by_function).then_output(move || {
        aws_sdk_lambda::operation::list_versions_by_function::ListVersionsByFunctionOutput::builder()
            .set_versions(Some(
                ["$LATEST", "1", "2"]
                    .into_iter()
                    .map(|version| {
                        FunctionConfiguration::builder()
                            .version(version)
                            .last_modified(published.clone())
                            .build()
                    })
                    .collect(),
            ))
            .build()
    });
    // Every write names the revision its plan was read with.
    let moved = mock!(aws_sdk_lambda::Client::update_alias)
        .match_requests(|request| request.revision_id().is_some_and(|id| id.starts_with('r')))
        .then_error(|| {
            UpdateAliasError::generic(runbook_tests::replay::error_meta(
                "PreconditionFailedException",
                "The Revision Id provided does not match the latest Revision Id.",
            ))
        });
    let quiet = runbook_tests::replay::QuietFunction::new();
    let lambda = mock_client!(
        aws_sdk_lambda,
        RuleMode::MatchAny,
        [
            &get_alias,
            &versions,
            &moved,
            &quiet.configuration,
            &quiet.aliases
        ]
    );
    let responder = setup.responder_with(&[], lambda);
    let report = responder
        .handle(
            lambda_alarm_event(
                &format!("{function}-live-errors"),
                "ALARM",
                "Errors",
                &function,
                Some("live"),
            ),
            &invocation(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(
        report.reason.contains("changed under 2 plans in a row")
            && report.reason.contains("PreconditionFailedException"),
        "{}",
        report.reason
    );
    assert_eq!(moved.num_calls(), 2, "planned once more, then left alone");
    assert!(report.actions.iter().all(|a| !a.applied), "{report:?}");
}
