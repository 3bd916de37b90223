//! `tendermint-kvstore [HOST:PORT]`: the `tendermint-abci` crate's in-memory key-value store
//! (`KeyValueStoreApp`) served by that crate's ABCI server on `HOST:PORT` (default
//! `127.0.0.1:26658`, CometBFT's `proxy_app` default). It prints `listening on ADDR` once the
//! socket is bound, and exits non-zero on any server error.

fn main() -> std::process::ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:26658".into());
    let (app, driver) = tendermint_abci::KeyValueStoreApp::new();
    let server = match tendermint_abci::ServerBuilder::new(1 << 20).bind(&addr, app) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("tendermint-kvstore: binding {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.local_addr());
    std::thread::spawn(move || {
        // The store's own thread: without it no call can be answered.
        if let Err(e) = driver.run() {
            eprintln!("tendermint-kvstore: the store stopped: {e}");
            std::process::exit(1);
        }
    });
    match server.listen() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tendermint-kvstore: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
