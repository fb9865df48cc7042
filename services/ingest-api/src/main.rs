use clap::Parser;
use ingest_api::config::{Cli, Command, KeysCommand};
use ingest_api::{Application, telemetry};

/// mimalloc instead of glibc's malloc: a request's buffers are allocated on an
/// HTTP worker and freed on an actor thread (and the other way round), and
/// glibc served those frees under contended arena locks. At 1,024 connections
/// the service used about 12 % less CPU per request with mimalloc
/// (docs/performance.md, stop 24).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(KeysCommand::Create { name, rps }) => {
            ingest_api::auth::create_key(&name, rps).map(|(token, line)| {
                println!("token: {token}");
                println!("line:  {line}");
                eprintln!("Give the token to the client; append the line to the API keys file. The token is not stored anywhere.");
            }).map_err(anyhow::Error::from)
        }
        Command::StreamStats {
            data_dir,
            stream_name,
        } => ingest_api::inspect::local_stream_stats(&data_dir, &stream_name)
            .map(|stats| println!("{}", serde_json::to_string_pretty(&stats).unwrap_or_default()))
            .map_err(anyhow::Error::from),
        Command::Serve(args) => args.settings().map_err(anyhow::Error::from).and_then(|settings| {
            telemetry::init(settings.log_format);
            actix_web::rt::System::new().block_on(async move {
                Application::build(settings).await?.run_until_stopped().await
            })
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
