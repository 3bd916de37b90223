//! `bulwark-byzantine <behaviour> <home> <bulwark>`: runs the validator of `home` with the real
//! driver, sockets and stores, and `bulwark-adversary`'s behaviour between its engine and its
//! peers, measured (under the simulated PSP) as the genuine `bulwark` binary given.
//! Every proposal it sends is logged (`bulwark-byzantine: sends proposal height= round= parts=`)
//! so a test can see its behaviour played. Only the end-to-end tests start it; the measured
//! image holds the `bulwark` binary alone.

use bulwark::home::Home;
use bulwark::run::{start_interposed, Dests, Interposer};
use bulwark_adversary::{parse_behaviour, Adversary, Dest};
use bulwark_node::engine::Engine;
use bulwark_types::tendermint::private_key::PrivateKey;
use bulwark_wire::Payload;
use std::path::PathBuf;

/// The adversary with the validator indices it names turned into peer positions: peers are
/// the other validators, so index `i` is position `i` among them without this node.
struct Byzantine {
    adversary: Adversary,
    me: usize,
}

impl Byzantine {
    fn dests(&self, out: Vec<(Dest, Payload)>) -> Vec<(Dests, Payload)> {
        out.into_iter()
            .inspect(|(_, p)| {
                // What it proposes, for the tests to see the behaviour played (an oversized
                // block is a part set above block.max_bytes).
                if let Payload::Proposal(p) = p {
                    eprintln!(
                        "bulwark-byzantine: sends proposal height={} round={} parts={}",
                        p.height,
                        p.round,
                        p.block_id
                            .as_ref()
                            .and_then(|b| b.part_set_header.as_ref())
                            .map_or(0, |h| h.total)
                    );
                }
            })
            .map(|(dest, p)| match dest {
                Dest::All => (None, p),
                Dest::Some(validators) => (
                    Some(
                        validators
                            .into_iter()
                            .filter(|v| *v != self.me)
                            .map(|v| if v > self.me { v - 1 } else { v })
                            .collect(),
                    ),
                    p,
                ),
            })
            .collect()
    }
}

impl Interposer for Byzantine {
    fn incoming(
        &mut self,
        engine: &Engine,
        from: usize,
        payload: &Payload,
    ) -> Vec<(Dests, Payload)> {
        let from = if from >= self.me { from + 1 } else { from };
        let out = self.adversary.incoming(engine, from, payload);
        self.dests(out)
    }

    fn outgoing(
        &mut self,
        engine: &Engine,
        payload: Payload,
        relayed: bool,
    ) -> Vec<(Dests, Payload)> {
        let out = self.adversary.outgoing(engine, payload, relayed);
        self.dests(out)
    }

    fn act(&mut self, engine: &Engine) -> Vec<(Dests, Payload)> {
        let out = self.adversary.act(engine);
        self.dests(out)
    }
}

/// An honest validator whose driver is interrupted while it works: at height 2, inside a tick
/// (between two of the driver's waits), it sends itself SIGINT and keeps the engine thread
/// busy for half a second, long enough for another runtime's signal driver to hand the signal
/// out. The driver must still stop cleanly: a signal listener made afresh at each wait misses
/// it. The VM tests' Ctrl-Alt-Del (SIGINT to PID 1) lands like this on a busy validator.
struct InterruptedWhileBusy {
    raised: bool,
}

/// [`InterruptedWhileBusy`]'s name on the command line.
const INTERRUPTED_WHILE_BUSY: &str = "interrupted-while-busy";

impl Interposer for InterruptedWhileBusy {
    fn incoming(&mut self, _: &Engine, _: usize, _: &Payload) -> Vec<(Dests, Payload)> {
        Vec::new()
    }

    fn outgoing(&mut self, _: &Engine, payload: Payload, _: bool) -> Vec<(Dests, Payload)> {
        vec![(None, payload)]
    }

    fn act(&mut self, engine: &Engine) -> Vec<(Dests, Payload)> {
        if !self.raised && engine.state().last_block_height >= 2 {
            self.raised = true;
            let sent = std::process::Command::new("kill")
                .args(["-INT", &std::process::id().to_string()])
                .status();
            eprintln!("bulwark-byzantine: sent itself SIGINT while busy: {sent:?}");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Vec::new()
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(home), Some(genuine)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: bulwark-byzantine <behaviour> <home> <genuine bulwark binary>");
    };
    // A compromised genuine validator: its simulated PSP measures the published binary, so its
    // sealed identity opens and its peers admit it.
    bulwark::home::measure_as(PathBuf::from(genuine));
    let home = Home::load(&PathBuf::from(home))?;
    if name == INTERRUPTED_WHILE_BUSY {
        return start_interposed(home, Some(Box::new(InterruptedWhileBusy { raised: false })));
    }
    let behaviour =
        parse_behaviour(&name).ok_or_else(|| anyhow::anyhow!("no behaviour named {name}"))?;
    let key = match &home.validator_key.priv_key {
        PrivateKey::Ed25519(k) => ed25519_consensus::SigningKey::try_from(k.clone())
            .map_err(|e| anyhow::anyhow!("validator key: {e}"))?,
        _ => anyhow::bail!("validator key is not ed25519"),
    };
    let validators = &home.genesis.validators;
    let me = validators
        .iter()
        .position(|v| v.address == home.validator_key.address)
        .ok_or_else(|| anyhow::anyhow!("this validator is not in genesis"))?;
    // The adversary's validator indices are the set's order, as the engine's.
    let seed = u64::from_be_bytes(home.validator_key.address.as_bytes()[..8].try_into()?);
    let adversary = Adversary::new(
        behaviour,
        me,
        validators.len(),
        key,
        home.genesis.chain_id.clone(),
        seed,
    );
    eprintln!("bulwark-byzantine: validator {me} plays {name}");
    start_interposed(home, Some(Box::new(Byzantine { adversary, me })))
}
