use dlq_redriver::config::RedriverConfig;
use runbook_shared::config::Env;
use runbook_shared::edge::publish::ReportEvents;
use runbook_shared::edge::{serve, startup_failed};
use runbook_shared::model::FleetConfig;

#[tokio::main]
async fn main() -> Result<(), runbook_shared::edge::Error> {
    runbook_shared::logging::init();
    let env = Env::process();
    let config = RedriverConfig::from_env(&env).map_err(startup_failed)?;
    let places = FleetConfig::from_env(&env, &config.safety.home).map_err(startup_failed)?;
    let sdk = runbook_shared::aws::load_sdk_config().await;
    let report_events = ReportEvents::from_env(&env, &sdk).map_err(startup_failed)?;
    let fleet = dlq_redriver::fleet(config, places, &sdk);
    serve(
        dlq_redriver::FUNCTION,
        report_events,
        |event, invocation| {
            let fleet = &fleet;
            async move { fleet.handle(event, &invocation).await }
        },
    )
    .await
}
