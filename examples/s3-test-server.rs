//! A real S3 server (s3s-fs behind s3s, which verifies SigV4 signatures and presigned-URL
//! expiry) for the shell test scripts. It is built by `cargo test` from the dev-dependencies
//! the Rust tests already use, so CI need not `cargo install s3s-fs` separately.
//!
//! Usage (the same flags as the `s3s-fs` binary):
//!   s3-test-server --host 127.0.0.1 --port 9000 --access-key AK --secret-key SK DIR

use hyper_util::rt::{TokioExecutor, TokioIo};

struct Args {
    host: String,
    port: u16,
    access_key: String,
    secret_key: String,
    root: std::path::PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut host = "127.0.0.1".to_string();
    let mut port = 9000u16;
    let mut access_key = None;
    let mut secret_key = None;
    let mut root = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--host" => host = value("--host")?,
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--access-key" => access_key = Some(value("--access-key")?),
            "--secret-key" => secret_key = Some(value("--secret-key")?),
            "--version" => {
                println!("s3-test-server (s3s-fs 0.14.1)");
                std::process::exit(0);
            }
            other if other.starts_with("--") => return Err(format!("unknown flag {other}")),
            other => root = Some(std::path::PathBuf::from(other)),
        }
    }
    Ok(Args {
        host,
        port,
        access_key: access_key.ok_or("--access-key is required")?,
        secret_key: secret_key.ok_or("--secret-key is required")?,
        root: root.ok_or("the data directory is required")?,
    })
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("s3-test-server: {e}");
            std::process::exit(2);
        }
    };
    let fs = s3s_fs::FileSystem::new(&args.root).expect("s3s-fs data directory");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        args.access_key.as_str(),
        args.secret_key.as_str(),
    ));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .expect("bind");
    eprintln!(
        "s3-test-server listening on {}",
        listener.local_addr().unwrap()
    );
    let accept = async {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(sock), service).await;
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
