use dlq_redriver::Redriver;
use dlq_redriver::config::RedriverConfig;
use runbook_shared::config::Env;
use runbook_shared::entry::{serve, startup_failed};
use runbook_shared::report_events::ReportEvents;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runbook_shared::logging::init();
    let env = Env::process();
    let config = RedriverConfig::from_env(&env).map_err(startup_failed)?;
    let sdk = runbook_shared::aws::load_sdk_config().await;
    let report_events = ReportEvents::from_env(&env, &sdk).map_err(startup_failed)?;
    let redriver = Redriver::new(config, &sdk);
    serve(
        dlq_redriver::FUNCTION,
        report_events,
        |event, invocation| {
            let redriver = &redriver;
            async move { redriver.handle(event, &invocation).await }
        },
    )
    .await
}
