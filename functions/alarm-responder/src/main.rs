use alarm_responder::Responder;
use alarm_responder::config::ResponderConfig;
use runbook_shared::config::Env;
use runbook_shared::entry::{serve, startup_failed};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    runbook_shared::logging::init();
    let config = ResponderConfig::from_env(&Env::process()).map_err(startup_failed)?;
    let responder = Responder::new(config, &runbook_shared::aws::load_sdk_config().await);
    serve(|event, invocation| {
        let responder = &responder;
        async move { responder.handle(event, &invocation).await }
    })
    .await
}
