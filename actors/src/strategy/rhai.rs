//! The Rhai plugin host: `strategies_dir/NAME.rhai` files defining `fn select(ctx, candidates)`,
//! compiled once, recompiled when the file changes (no restart), run in a sandbox.
//!
//! The sandbox: an operation budget (a loop ends in an error, not a hung request), call-depth,
//! expression-depth, string, array and map size limits, no `import` (so no file or network
//! access; Rhai has none built in), `print`/`debug` to the log. Whatever a plugin does wrong —
//! not compiling, erroring, looping, answering nonsense — is an error value the service's
//! selector turns into a fallback decision, logs and counts: never a failed request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use arc_swap::ArcSwap;
use chrono::{DateTime, Timelike, Utc};
use notify::{RecursiveMode, Watcher};
use rhai::{AST, Array, CallFnOptions, Dynamic, Engine, Map, Scope};

use super::builtin::is_builtin;
use super::{Candidate, Choice, RequestContext, Strategy, StrategyError, StrategyStats};

/// Operations one decision may take: ample for a scan of the candidates, short for a loop.
const MAX_OPERATIONS: u64 = 50_000;
const MAX_CALL_LEVELS: usize = 16;
const MAX_STRING_SIZE: usize = 64 * 1024;
const MAX_ARRAY_SIZE: usize = 10_000;
const MAX_MAP_SIZE: usize = 10_000;

/// Where the hour in `ctx.hour` comes from (tests pin it).
pub type Clock = fn() -> DateTime<Utc>;

/// Every plugin of one directory, kept up to date with it.
pub struct PluginHost {
    dir: PathBuf,
    /// Made when the first plugin file is read: without plugins, Rhai's function tables (and
    /// the code that builds them) never take memory.
    engine: OnceLock<Arc<Engine>>,
    clock: Clock,
    plugins: RwLock<BTreeMap<String, Arc<PluginSlot>>>,
    /// Kept alive so changes keep arriving; `None` when the directory cannot be watched.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

/// One plugin file and what became of its last load.
pub struct PluginSlot {
    pub name: String,
    pub path: PathBuf,
    loaded: ArcSwap<Loaded>,
    pub stats: Arc<StrategyStats>,
}

/// A plugin's last load.
pub enum Loaded {
    Ready { ast: AST, needs_body: bool },
    Failed(String),
}

impl PluginSlot {
    /// `Ok(())` when loaded, else why not.
    pub fn status(&self) -> Result<(), String> {
        match &**self.loaded.load() {
            Loaded::Ready { .. } => Ok(()),
            Loaded::Failed(reason) => Err(reason.clone()),
        }
    }
}

impl PluginHost {
    /// Loads every `*.rhai` in `dir` (a missing directory has none) and watches it for changes.
    pub fn start(dir: &Path) -> Arc<PluginHost> {
        PluginHost::start_with_clock(dir, Utc::now)
    }

    pub fn start_with_clock(dir: &Path, clock: Clock) -> Arc<PluginHost> {
        let host = Arc::new(PluginHost {
            dir: dir.to_path_buf(),
            engine: OnceLock::new(),
            clock,
            plugins: RwLock::new(BTreeMap::new()),
            watcher: Mutex::new(None),
        });
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                host.reload(&entry.path());
            }
        }
        host.watch();
        host
    }

    /// Starts the file watcher; changes reload the file they name. Holds only a weak reference,
    /// so the watcher ends with the host.
    fn watch(self: &Arc<Self>) {
        if !self.dir.is_dir() {
            tracing::info!(dir = %self.dir.display(), "no strategies directory: no plugins");
            return;
        }
        let host = Arc::downgrade(self);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let (Some(host), Ok(event)) = (host.upgrade(), event) else {
                return;
            };
            for path in &event.paths {
                host.reload(path);
            }
        });
        let watching = watcher.and_then(|mut w| {
            w.watch(&self.dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match watching {
            Ok(watcher) => {
                *self.watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(watcher);
            }
            Err(error) => tracing::warn!(dir = %self.dir.display(), %error,
                "cannot watch the strategies directory: plugins load once, without hot reload"),
        }
    }

    /// (Re)loads the plugin at `path` if it is one (`NAME.rhai` directly in the directory).
    pub fn reload(&self, path: &Path) {
        let Some(name) = plugin_name(path) else {
            return;
        };
        let path = self.dir.join(format!("{name}.rhai"));
        let loaded = match std::fs::read_to_string(&path) {
            _ if is_builtin(&name) => Loaded::Failed(format!(
                "`{name}` is the name of a built-in strategy: rename the file"
            )),
            Ok(source) => self.compile(&name, &source),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Loaded::Failed("the file was removed".to_owned())
            }
            Err(error) => Loaded::Failed(format!("cannot read {}: {error}", path.display())),
        };
        let slot = self.slot(&name, &path);
        match &loaded {
            Loaded::Ready { .. } => tracing::info!(plugin = %name, "strategy plugin loaded"),
            Loaded::Failed(reason) => {
                tracing::warn!(plugin = %name, %reason, "strategy plugin not loaded");
                slot.stats.set_last_error(reason.clone());
            }
        }
        slot.loaded.store(Arc::new(loaded));
    }

    fn engine(&self) -> &Arc<Engine> {
        self.engine.get_or_init(|| Arc::new(sandboxed_engine()))
    }

    fn compile(&self, name: &str, source: &str) -> Loaded {
        let mut ast = match self.engine().compile(source) {
            Ok(ast) => ast,
            Err(error) => return Loaded::Failed(format!("does not compile: {error}")),
        };
        ast.set_source(name);
        let has_select = ast
            .iter_functions()
            .any(|f| f.name == "select" && f.params.len() == 2);
        if !has_select {
            return Loaded::Failed("defines no `fn select(ctx, candidates)`".to_owned());
        }
        let defines_needs_body = ast
            .iter_functions()
            .any(|f| f.name == "needs_body" && f.params.is_empty());
        let needs_body = defines_needs_body
            && self
                .engine()
                .call_fn_with_options::<bool>(
                    CallFnOptions::new().eval_ast(false),
                    &mut Scope::new(),
                    &ast,
                    "needs_body",
                    (),
                )
                .unwrap_or(false);
        Loaded::Ready { ast, needs_body }
    }

    fn slot(&self, name: &str, path: &Path) -> Arc<PluginSlot> {
        if let Some(slot) = self.get(name) {
            return slot;
        }
        let mut plugins = self.plugins.write().unwrap_or_else(PoisonError::into_inner);
        plugins
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(PluginSlot {
                    name: name.to_owned(),
                    path: path.to_path_buf(),
                    loaded: ArcSwap::from_pointee(Loaded::Failed("not loaded yet".to_owned())),
                    stats: Arc::default(),
                })
            })
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every plugin file seen, by name.
    pub fn slots(&self) -> Vec<Arc<PluginSlot>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The strategy a service uses for plugin `name` (it follows reloads).
    pub fn strategy(&self, name: &str) -> Option<Arc<dyn Strategy>> {
        let slot = self.get(name)?;
        Some(Arc::new(Plugin {
            slot,
            engine: self.engine().clone(),
            clock: self.clock,
        }))
    }
}

/// `NAME` of `.../NAME.rhai`, when NAME is a plain identifier-like name.
fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "rhai" {
        return None;
    }
    let name = path.file_stem()?.to_str()?;
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    plain.then(|| name.to_owned())
}

/// A Rhai engine with the sandbox's limits; `print` and `debug` go to the log.
pub fn sandboxed_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(MAX_STRING_SIZE);
    engine.set_max_array_size(MAX_ARRAY_SIZE);
    engine.set_max_map_size(MAX_MAP_SIZE);
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.on_print(|text| tracing::info!(target: "hestia::plugin", "{text}"));
    engine.on_debug(|text, source, position| {
        tracing::debug!(target: "hestia::plugin", plugin = source.unwrap_or("?"), %position, "{text}")
    });
    engine
}

/// A service's use of one plugin: reads the slot's current load on every decision.
struct Plugin {
    slot: Arc<PluginSlot>,
    engine: Arc<Engine>,
    clock: Clock,
}

impl Strategy for Plugin {
    fn name(&self) -> &str {
        &self.slot.name
    }

    fn needs_body(&self) -> bool {
        matches!(
            &**self.slot.loaded.load(),
            Loaded::Ready {
                needs_body: true,
                ..
            }
        )
    }

    fn choose(
        &self,
        candidates: &[Candidate<'_>],
        request: &RequestContext<'_>,
    ) -> Result<Option<Choice>, StrategyError> {
        let loaded = self.slot.loaded.load();
        let ast = match &**loaded {
            Loaded::Ready { ast, .. } => ast,
            Loaded::Failed(reason) => {
                return Err(StrategyError::NotLoaded {
                    name: self.slot.name.clone(),
                    reason: reason.clone(),
                });
            }
        };
        let ctx = context_map(request, (self.clock)());
        let count = candidates.len();
        let candidates: Array = candidates.iter().enumerate().map(candidate_map).collect();
        let answer = self
            .engine
            .call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(false),
                &mut Scope::new(),
                ast,
                "select",
                (Dynamic::from_map(ctx), Dynamic::from_array(candidates)),
            )
            .map_err(|error| StrategyError::Failed {
                name: self.slot.name.clone(),
                message: error.to_string(),
            })?;
        if answer.is_unit() {
            return Ok(None);
        }
        match answer.as_int() {
            Ok(index) if index >= 0 => Ok(Some(Choice::new(index as usize, "plugin"))),
            _ => Err(StrategyError::Nonsense {
                name: self.slot.name.clone(),
                answer: format!("{answer} ({})", answer.type_name()),
                candidates: count,
            }),
        }
    }
}

/// `ctx`: `service`, `method`, `path`, `query`, `headers` (lower-case names), `client` (IP),
/// `hour` (0–23, UTC) and `body` (the JSON body's top-level fields, or `()`).
fn context_map(request: &RequestContext<'_>, now: DateTime<Utc>) -> Map {
    let mut ctx = Map::new();
    ctx.insert("service".into(), request.service.into());
    ctx.insert("method".into(), request.method.into());
    ctx.insert("path".into(), request.path.into());
    ctx.insert("query".into(), request.query.unwrap_or("").into());
    let mut headers = Map::new();
    for (name, value) in request.headers {
        if let Ok(value) = value.to_str() {
            headers.insert(name.as_str().into(), value.into());
        }
    }
    ctx.insert("headers".into(), Dynamic::from_map(headers));
    let client = request
        .client
        .map(|c| c.ip().to_string())
        .unwrap_or_default();
    ctx.insert("client".into(), client.into());
    ctx.insert("hour".into(), Dynamic::from_int(i64::from(now.hour())));
    let body = request
        .body
        .and_then(|fields| rhai::serde::to_dynamic(fields).ok())
        .unwrap_or(Dynamic::UNIT);
    ctx.insert("body".into(), body);
    ctx
}

/// One candidate: `index`, `url`, `weight`, `region`, `machine` (`""` when unset), `healthy`,
/// `in_flight`, `awake`.
fn candidate_map((index, candidate): (usize, &Candidate<'_>)) -> Dynamic {
    let mut map = Map::new();
    map.insert("index".into(), Dynamic::from_int(index as i64));
    map.insert("url".into(), candidate.url.into());
    map.insert(
        "weight".into(),
        Dynamic::from_int(i64::from(candidate.weight)),
    );
    map.insert("region".into(), candidate.region.unwrap_or("").into());
    map.insert("machine".into(), candidate.machine.unwrap_or("").into());
    map.insert("healthy".into(), candidate.healthy.into());
    map.insert(
        "in_flight".into(),
        Dynamic::from_int(candidate.in_flight as i64),
    );
    map.insert("awake".into(), candidate.awake.into());
    Dynamic::from_map(map)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use http::{HeaderMap, HeaderValue};
    use serde_json::{Value, json};

    use super::*;

    fn examples(clock: Clock) -> Arc<PluginHost> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../strategies");
        PluginHost::start_with_clock(&dir, clock)
    }

    fn at_hour(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, hour, 30, 0)
            .single()
            .expect("a valid time")
    }

    fn candidate(url: &'static str, region: &'static str, weight: u32) -> Candidate<'static> {
        Candidate {
            url,
            weight,
            region: Some(region),
            healthy: true,
            awake: true,
            ..Candidate::default()
        }
    }

    fn choose(
        strategy: &dyn Strategy,
        candidates: &[Candidate<'_>],
        headers: &HeaderMap,
        body: Option<&serde_json::Map<String, Value>>,
    ) -> Option<usize> {
        let mut request = RequestContext::new("svc", "POST", "/v1/chat/completions", headers);
        request.body = body;
        request.client = Some("10.1.2.3:5000".parse().expect("an address"));
        strategy
            .choose(candidates, &request)
            .expect("the example does not fail")
            .map(|choice| choice.index)
    }

    #[test]
    fn every_example_loads() {
        let host = examples(Utc::now);
        let names: Vec<_> = host.slots().iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["model_aware", "sticky_weighted", "time_of_day"]);
        for slot in host.slots() {
            assert_eq!(slot.status(), Ok(()), "{}", slot.name);
        }
    }

    #[test]
    fn model_aware_sends_chat_models_to_the_gpu_and_embeddings_to_the_cpu() {
        let host = examples(Utc::now);
        let plugin = host.strategy("model_aware").expect("the example");
        assert!(plugin.needs_body());
        let mut candidates = vec![
            candidate("http://own", "", 1),
            candidate("http://gpu-1", "gpu", 1),
            candidate("http://gpu-2", "gpu", 1),
            candidate("http://cpu", "cpu", 1),
        ];
        candidates[1].in_flight = 3;
        let headers = HeaderMap::new();
        let body = |v: Value| v.as_object().cloned().expect("an object");
        let llama = body(json!({"model": "llama3:8b"}));
        assert_eq!(
            choose(&*plugin, &candidates, &headers, Some(&llama)),
            Some(2)
        );
        let embed = body(json!({"model": "nomic-embed-text"}));
        assert_eq!(
            choose(&*plugin, &candidates, &headers, Some(&embed)),
            Some(3)
        );
        let other = body(json!({"model": "phi3"}));
        assert_eq!(choose(&*plugin, &candidates, &headers, Some(&other)), None);
        assert_eq!(choose(&*plugin, &candidates, &headers, None), None);
    }

    #[test]
    fn time_of_day_follows_the_clock() {
        let candidates = [
            candidate("http://own", "", 1),
            candidate("http://home", "home", 1),
            candidate("http://office", "office", 1),
        ];
        let headers = HeaderMap::new();
        let morning = examples(|| at_hour(9));
        let plugin = morning.strategy("time_of_day").expect("the example");
        assert_eq!(choose(&*plugin, &candidates, &headers, None), Some(2));
        let night = examples(|| at_hour(23));
        let plugin = night.strategy("time_of_day").expect("the example");
        assert_eq!(choose(&*plugin, &candidates, &headers, None), Some(1));
    }

    #[test]
    fn sticky_weighted_keeps_each_user_on_one_instance_and_spreads_users_by_weight() {
        let host = examples(Utc::now);
        let plugin = host.strategy("sticky_weighted").expect("the example");
        let candidates = [
            candidate("http://own", "", 1),
            candidate("http://big", "", 3),
        ];
        let mut spread = BTreeMap::<usize, usize>::new();
        for user in 0..400 {
            let mut headers = HeaderMap::new();
            let name = HeaderValue::from_str(&format!("user-{user}")).expect("a header");
            headers.insert("x-user", name);
            let first = choose(&*plugin, &candidates, &headers, None).expect("a choice");
            let again = choose(&*plugin, &candidates, &headers, None).expect("a choice");
            assert_eq!(first, again, "user-{user} moved");
            *spread.entry(first).or_default() += 1;
        }
        let big = spread.get(&1).copied().unwrap_or(0);
        assert!(
            (250..=350).contains(&big),
            "weight 3 of 4 got {big} of 400 users"
        );
    }
}
