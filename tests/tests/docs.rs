//! docs/: every runbook in the code has its page, linked from docs/README.md, and every payload
//! example in the pages is an input its function understands (run in dry run against moto: the
//! resources do not exist, so it may fail or find nothing, but it must not be `rejected`).

use std::collections::BTreeSet;
use std::time::Duration;

use runbook_shared::config::Env;
use runbook_shared::deadline::Deadline;
use runbook_shared::model::Invocation;
use runbook_tests::fixtures::{
    QueuePair, TableSpec, create_audit_table, create_deployed_function, create_function,
    create_limits_table, create_queue, create_stack, runbooks,
};
use runbook_tests::moto::moto;
use runbook_tests::workspace_root;
use serde_json::{Value, json};

fn pages() -> Vec<(String, String)> {
    let mut pages: Vec<(String, String)> = std::fs::read_dir(workspace_root().join("docs"))
        .expect("docs/")
        .filter_map(Result::ok)
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(entry.path()).expect("page"),
            )
        })
        .collect();
    pages.sort();
    pages
}

/// The pages of docs/ that are no runbook's.
const NOT_RUNBOOKS: [&str; 17] = [
    "README.md",
    "adding-a-runbook.md",
    "alarms.md",
    "architecture.md",
    "benchmark.md",
    "brakes.md",
    "configuration.md",
    "deploying.md",
    "development.md",
    "evidence.md",
    "invariants.md",
    "left-to-people.md",
    "manual.md",
    "modes.md",
    "organization.md",
    "reports.md",
    "safety.md",
];

#[test]
fn every_runbook_that_acts_can_be_given_a_mode() {
    // health-check only reads; every other runbook in the code is in RUNBOOK_MODES' list.
    let acting: BTreeSet<&str> = runbooks()
        .into_iter()
        .map(|(_, id)| id)
        .filter(|id| *id != health_prober::RUNBOOK)
        .collect();
    let modes: BTreeSet<&str> = runbook_shared::model::RUNBOOKS.iter().copied().collect();
    assert_eq!(acting, modes);
    let page = std::fs::read_to_string(workspace_root().join("docs/modes.md")).expect("page");
    for runbook in modes {
        assert!(
            page.contains(&format!("`{runbook}`")),
            "docs/modes.md names {runbook}"
        );
    }
}

#[test]
fn every_runbook_in_the_code_has_a_page_linked_from_the_index() {
    let runbooks: BTreeSet<&str> = runbooks().into_iter().map(|(_, id)| id).collect();
    let index = std::fs::read_to_string(workspace_root().join("docs/README.md")).expect("index");
    for (page, _) in pages() {
        let runbook = page.trim_end_matches(".md");
        assert!(
            NOT_RUNBOOKS.contains(&page.as_str()) || runbooks.contains(runbook),
            "docs/{page} is the page of no runbook in the code ({runbooks:?})"
        );
    }
    for runbook in &runbooks {
        let page = workspace_root().join(format!("docs/{runbook}.md"));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("runbook {runbook} has no page docs/{runbook}.md"));
        assert!(
            index.contains(&format!("({runbook}.md)")),
            "docs/README.md links {runbook}"
        );
        assert!(
            text.contains(&format!("`{runbook}`")),
            "docs/{runbook}.md names its runbook id"
        );
        for section in [
            "## Symptoms and triggers",
            "## Impact",
            "## What the automation does",
            "## Run it by hand",
            "## Undo",
            "## Related",
        ] {
            assert!(text.contains(section), "docs/{runbook}.md lacks {section}");
        }
    }
}

/// (function binary, payload) of every example: ```json payload=<function> blocks, and
/// `aws lambda invoke --function-name <XFunctionName> … --payload '…'` commands.
fn payload_examples() -> Vec<(String, String, Value)> {
    let mut examples = Vec::new();
    for (page, text) in pages() {
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if let Some(function) = line.trim().strip_prefix("```json payload=") {
                let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
                let payload = serde_json::from_str(&block.join("\n"))
                    .unwrap_or_else(|err| panic!("{page}: payload for {function}: {err}"));
                examples.push((page.clone(), function.to_string(), payload));
            }
        }
        // Shell commands, with their `\` continuations joined.
        let joined = text.replace("\\\n", " ");
        for command in joined
            .lines()
            .filter(|l| l.trim_start().starts_with("aws lambda invoke"))
        {
            let function = command
                .split("--function-name <")
                .nth(1)
                .and_then(|rest| rest.split("FunctionName>").next())
                .unwrap_or_else(|| panic!("{page}: which function? {command}"));
            let function = match function {
                "LimitScaler" => "limit-scaler",
                "DlqRedriver" => "dlq-redriver",
                "AlarmResponder" => "alarm-responder",
                "HealthProber" => "health-prober",
                other => panic!("{page}: unknown function {other}"),
            };
            let Some(quoted) = command.split("--payload '").nth(1) else {
                continue; // a payload from a file
            };
            let json = quoted.split("' ").next().expect("closing quote");
            let payload =
                serde_json::from_str(json).unwrap_or_else(|err| panic!("{page}: {err}: {json}"));
            examples.push((page.clone(), function.to_string(), payload));
        }
    }
    examples
}

/// The examples name `orders` (table with index `by-customer`, queues `orders` and its DLQ
/// `orders-dlq`, stack), `orders-api` (alias `live`, alarm `orders-api-live-errors`),
/// `orders-worker`, and the stored limits table `limits`. The test's emulator is its own
/// (`moto::isolated`), so the names are free.
async fn create_the_resources_the_examples_name() {
    let dynamodb = moto().dynamodb();
    let mut table = TableSpec::provisioned("orders", 5, 5).with_index();
    table.name = "orders".into();
    table.create(&dynamodb).await;
    create_limits_table(&dynamodb, "limits", 100).await;

    let sqs = moto().sqs();
    let dlq = create_queue(&sqs, "orders-dlq", &[]).await;
    QueuePair::source_of(&sqs, "orders", &dlq, false).await;

    create_function(moto(), "orders-worker").await;
    create_deployed_function(moto(), "orders-api", "2").await;
    moto().boto3(
        "cloudwatch",
        "put_metric_alarm",
        json!({"AlarmName": "orders-api-live-errors", "Namespace": "AWS/Lambda", "MetricName": "Errors",
               "Dimensions": [{"Name": "FunctionName", "Value": "orders-api"}, {"Name": "Resource", "Value": "orders-api:live"}],
               "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 1.0,
               "ComparisonOperator": "GreaterThanOrEqualToThreshold"}),
    );
    create_stack(
        &moto().cloudformation(),
        "orders",
        json!({"Queue": {"Type": "AWS::SQS::Queue"}}),
    )
    .await;
}

#[tokio::test]
async fn every_payload_example_is_understood_by_its_function() {
    let _isolated = runbook_tests::moto::isolated("docs").await;
    let examples = payload_examples();
    assert!(examples.len() >= 20, "{} examples", examples.len());
    let functions: BTreeSet<&str> = examples.iter().map(|(_, f, _)| f.as_str()).collect();
    assert_eq!(
        functions.len(),
        4,
        "examples for every function: {functions:?}"
    );

    let audit = create_audit_table(&moto().dynamodb()).await;
    create_the_resources_the_examples_name().await;
    let pairs = [
        ("AUDIT_TABLE", audit.as_str()),
        ("AWS_REGION", runbook_tests::moto::REGION),
        ("ACCOUNT_ID", runbook_tests::moto::ACCOUNT),
        ("DRY_RUN", "true"),
        // Every name the examples use (a pattern that matches every name is refused).
        ("MANAGED_RESOURCES", "orders*,limits*,checkout*,shop*,prod*"),
        ("ALLOW_ON_DEMAND", "true"),
        ("LIMITS_TABLE", "limits"),
        ("LIMITS_VALUE_ATTRS", "requests_per_second"),
        ("REPORT_EVENT_BUS", "off"),
    ];
    let env = Env::from_pairs(&pairs);
    let sdk = moto().sdk_config();
    let scaler = limit_scaler::Scaler::new(
        limit_scaler::config::ScalerConfig::from_env(&env).expect("config"),
        &sdk,
    );
    let redriver = dlq_redriver::Redriver::new(
        dlq_redriver::config::RedriverConfig::from_env(&env).expect("config"),
        &sdk,
    );
    let responder = alarm_responder::Responder::new(
        alarm_responder::config::ResponderConfig::from_env(&env).expect("config"),
        &sdk,
    );
    let prober = health_prober::Prober::new(
        health_prober::config::ProberConfig::from_env(&env).expect("config"),
        &sdk,
    );

    for (page, function, payload) in examples {
        let invocation = Invocation::new(
            uuid::Uuid::new_v4().to_string(),
            Deadline::after(Duration::from_secs(20)),
        );
        let output = match function.as_str() {
            "limit-scaler" => {
                serde_json::to_value(Box::pin(scaler.handle(payload.clone(), &invocation)).await)
            }
            "dlq-redriver" => {
                serde_json::to_value(Box::pin(redriver.handle(payload.clone(), &invocation)).await)
            }
            "alarm-responder" => {
                serde_json::to_value(Box::pin(responder.handle(payload.clone(), &invocation)).await)
            }
            "health-prober" => {
                serde_json::to_value(Box::pin(prober.handle(payload.clone(), &invocation)).await)
            }
            other => panic!("{page}: unknown function {other}"),
        }
        .expect("report");
        let reports = match output.get("reports").and_then(Value::as_array) {
            Some(reports) => reports.clone(),
            None => vec![output.clone()],
        };
        for report in reports {
            assert_ne!(
                report["outcome"], "rejected",
                "{page}: {payload} -> {report}"
            );
            assert_eq!(report["trigger"]["kind"], "manual", "{page}: {report}");
            assert_ne!(report["outcome"], "remediated", "{page}: dry run: {report}");
        }
    }
    // The check has teeth: a misspelt field is rejected through the same path.
    let invocation = Invocation::new("typo", Deadline::after(Duration::from_secs(20)));
    let typo =
        Box::pin(scaler.handle(json!({"tabel": "orders", "dry_run": true}), &invocation)).await;
    let typo = serde_json::to_value(typo).expect("report");
    assert_eq!(typo["outcome"], "rejected", "{typo}");
}

/// Every function's Timeout is over the AWS CLI's 60-second read timeout, on which the CLI
/// retries the call: a synchronous invoke without `--cli-read-timeout 0` can run a manual
/// redrive or an approved plan twice. So every documented invoke carries it, and so do the
/// approval commands a report hands out.
#[test]
fn every_documented_invoke_waits_for_its_answer_instead_of_running_twice() {
    let mut texts: Vec<(String, String)> = pages();
    texts.push((
        "README.md".into(),
        std::fs::read_to_string(workspace_root().join("README.md")).expect("README"),
    ));
    let commands = runbook_shared::model::approval_commands("fn", "eu-west-1", "id");
    texts.push(("approval commands".into(), commands.approve));
    texts.push(("approval commands".into(), commands.deny));
    let mut invokes = 0;
    for (page, text) in texts {
        // Shell commands with their `\` continuations joined, cut at `&&`, `;` and backticks;
        // `aws [global options] lambda invoke …` in any order of its options.
        let joined = text.replace("\\\n", " ");
        for command in joined
            .lines()
            .flat_map(|line| line.split(['`', ';']))
            .flat_map(|part| part.split("&&"))
        {
            let words: Vec<&str> = command.split_whitespace().collect();
            let Some(aws) = words.iter().position(|word| *word == "aws") else {
                continue;
            };
            // A command names its function; prose that mentions the command does not.
            let invoke = words[aws..]
                .windows(2)
                .any(|pair| pair == ["lambda", "invoke"])
                && words.contains(&"--function-name");
            if !invoke {
                continue;
            }
            invokes += 1;
            assert!(
                words
                    .windows(2)
                    .any(|pair| pair == ["--cli-read-timeout", "0"]),
                "{page}: {command}"
            );
        }
    }
    assert!(invokes >= 15, "{invokes} invokes found");
}

/// The README and every page render: a table is not cut in two by a blank line between its rows
/// (a row after a blank line only starts a table when a `|---|` line follows it), and no cell is
/// a page long.
#[test]
fn the_tables_render_and_their_cells_stay_short() {
    let mut texts = pages();
    texts.push((
        "../README.md".into(),
        std::fs::read_to_string(workspace_root().join("README.md")).expect("README"),
    ));
    let mut rows = 0;
    for (page, text) in texts {
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if !line.starts_with('|') {
                continue;
            }
            rows += 1;
            let continues_a_table =
                at >= 2 && lines[at - 1].is_empty() && lines[at - 2].starts_with('|');
            let starts_a_table = lines
                .get(at + 1)
                .is_some_and(|next| next.starts_with("|---"));
            assert!(
                !continues_a_table || starts_a_table,
                "docs/{page}:{}: a blank line cuts a table in two before {line:.60}",
                at + 1
            );
            for cell in line.split(" | ") {
                assert!(
                    cell.chars().count() <= 400,
                    "docs/{page}:{}: a cell of {} characters: {cell:.80}…",
                    at + 1,
                    cell.chars().count()
                );
            }
        }
    }
    assert!(rows > 50, "{rows} table rows");
}

/// The README's first screen says what it does, the two commands and where to go next; the
/// reference lives in docs/.
#[test]
fn the_readme_is_a_first_screen_and_every_page_it_names_exists() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README");
    let lines = readme.lines().count();
    assert!(lines <= 100, "README.md has {lines} lines");
    let first_screen: String = readme.lines().take(25).collect::<Vec<_>>().join("\n");
    assert!(first_screen.contains("scripts/demo.sh"), "{first_screen}");
    assert!(first_screen.contains("scripts/test.sh"), "{first_screen}");
    for (at, _) in readme.match_indices("](docs/") {
        let link = &readme[at + 2..];
        let path = &link[..link.find([')', '#']).expect("a closed link")];
        assert!(
            workspace_root().join(path).exists(),
            "README.md links {path}, which does not exist"
        );
    }
    assert!(readme.contains("## Where to go next"));
}
