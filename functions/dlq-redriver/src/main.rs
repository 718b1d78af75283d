use dlq_redriver::Redriver;
use dlq_redriver::config::RedriverConfig;
use runbook_shared::config::Env;
use runbook_shared::entry::{serve, startup_failed};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runbook_shared::logging::init();
    let config = RedriverConfig::from_env(&Env::process()).map_err(startup_failed)?;
    let redriver = Redriver::new(config, &runbook_shared::aws::load_sdk_config().await);
    serve(|event, invocation| {
        let redriver = &redriver;
        async move { redriver.handle(event, &invocation).await }
    })
    .await
}
