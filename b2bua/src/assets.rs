//! What calls play and run — prompt sets (the default one and each ITSP's), IVR flows and the
//! access numbers that select them — held as one immutable snapshot that is swapped whole. A
//! call takes the snapshot's pieces it needs when it starts and keeps them, so an upload, a
//! reload or a changed number never changes a call in progress, and a failed one changes
//! nothing at all.
//!
//! On disk a tenant's set lives in `<tenant_prompts>/<tenant>/v<ms>/<lang>/<lang>_<name>.au`
//! beside a `current` symlink; a new version is written beside the old and `current` is
//! renamed over, so a crash leaves either the old set or the new one.

use crate::access::{AccessNumber, AccessTable, Source};
use crate::config::Config;
use prompts::set::PromptSet;
use prompts::upload::{self, UploadReport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// One consistent view of prompts, flows and access numbers.
#[derive(Debug, Default)]
pub struct Live {
    /// The default prompt set.
    pub default: Arc<PromptSet>,
    /// Each tenant's set with the default standing in for what it lacks.
    pub tenants: HashMap<String, Arc<PromptSet>>,
    /// Flows by name.
    pub flows: HashMap<String, Arc<ivr::Flow>>,
    /// The numbers callers dial: the configuration file's and the database's.
    pub access: Arc<AccessTable>,
}

impl Live {
    /// The prompts a tenant's callers hear.
    pub fn prompts(&self, tenant: &str) -> Arc<PromptSet> {
        self.tenants.get(tenant).unwrap_or(&self.default).clone()
    }
}

/// Why an upload or reload was refused; nothing live changed.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The request itself is wrong (a tenant or flow name we cannot use).
    #[error("{0}")]
    Invalid(String),
    /// The upload's files are wrong; the report says which.
    #[error("the prompt set was refused: {}", .0.errors.join("; "))]
    Refused(Box<UploadReport>),
    /// The archive could not be unpacked.
    #[error(transparent)]
    Archive(#[from] upload::ArchiveError),
    /// Flows that do not load, each with its mistakes.
    #[error("{}", .0.join("\n"))]
    Flows(Vec<String>),
    /// Nowhere to keep uploads.
    #[error("no tenant_prompts directory is configured, so prompt sets cannot be uploaded")]
    NoStore,
    /// The disk failed us.
    #[error("{0}")]
    Io(String),
    /// Another upload is being checked; this one may be sent again shortly.
    #[error("another upload is being checked; try again in a minute")]
    Busy,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> AssetError + '_ {
    move |e| AssetError::Io(format!("{what}: {e}"))
}

/// The live snapshot, and where uploads go.
pub struct Assets {
    tenant_dir: Option<PathBuf>,
    flows_dir: PathBuf,
    /// The configuration file's access numbers, which the database's are merged with.
    fixed: Vec<AccessNumber>,
    live: RwLock<Arc<Live>>,
    /// One change at a time, so two uploads cannot interleave their swaps.
    change: tokio::sync::Mutex<()>,
    /// One archive unpacked and checked at a time: an archive may expand to 512 MiB, and a
    /// few tenants uploading at once must not take all the node's memory and both cores.
    unpacking: tokio::sync::Semaphore,
    /// Archives being unpacked now, and the most there ever were at once (for the tests).
    unpacking_now: std::sync::atomic::AtomicUsize,
    unpacking_peak: std::sync::atomic::AtomicUsize,
}

/// How long an upload waits for the one before it to be checked.
const UNPACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A tenant name we can use as a directory: letters, digits, `.`, `_`, `-`, not leading `.`.
pub(crate) fn tenant_ok(t: &str) -> Result<(), AssetError> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && !t.starts_with('.')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(()).ok_or_else(|| {
        AssetError::Invalid(format!(
            "`{t}` cannot name a tenant: use letters, digits, '.', '_' or '-'"
        ))
    })
}

impl Assets {
    /// Loads the default set, every tenant's current set and the flows. Flows that do not
    /// load, or an access number naming a missing flow, stop the start with every error.
    pub fn load(cfg: &Config) -> Result<Assets, AssetError> {
        let (default, report) =
            PromptSet::load(&cfg.prompts).map_err(|e| AssetError::Io(e.to_string()))?;
        for e in &report.errors {
            tracing::warn!("prompt set: {e}");
        }
        let default = Arc::new(default);
        let mut tenants = HashMap::new();
        if let Some(dir) = &cfg.tenant_prompts {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.filter_map(Result::ok) {
                    let tenant = e.file_name().to_string_lossy().into_owned();
                    let current = e.path().join("current");
                    if tenant_ok(&tenant).is_err() || !current.exists() {
                        continue;
                    }
                    let (set, report) =
                        PromptSet::load(&current).map_err(|e| AssetError::Io(e.to_string()))?;
                    for e in &report.errors {
                        tracing::warn!(tenant, "prompt set: {e}");
                    }
                    tenants.insert(tenant, Arc::new(set.over(&default)));
                }
            }
        }
        let access = AccessTable::new(&cfg.access_numbers, &[]);
        let flows = Self::read_flows(&cfg.flows)?;
        Self::flows_in_use(&cfg.flows, &flows, &access, None)?;
        Ok(Assets {
            tenant_dir: cfg.tenant_prompts.clone(),
            flows_dir: cfg.flows.clone(),
            fixed: cfg.access_numbers.clone(),
            live: RwLock::new(Arc::new(Live {
                default,
                tenants,
                flows,
                access: Arc::new(access),
            })),
            change: tokio::sync::Mutex::new(()),
            unpacking: tokio::sync::Semaphore::new(1),
            unpacking_now: Default::default(),
            unpacking_peak: Default::default(),
        })
    }

    /// The configuration file's access numbers.
    pub fn fixed_access(&self) -> &[AccessNumber] {
        &self.fixed
    }

    /// The current snapshot.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn swap(&self, f: impl FnOnce(&Live) -> Live) {
        let mut guard = self.live.write().unwrap_or_else(|e| e.into_inner());
        let next = f(&guard);
        *guard = Arc::new(next);
    }

    fn read_flows(dir: &Path) -> Result<HashMap<String, Arc<ivr::Flow>>, AssetError> {
        let flows = ivr::load_dir(dir, &ivr::catalogue_prompts())
            .map_err(|errs| AssetError::Flows(errs.iter().map(|e| e.to_string()).collect()))?;
        let mut by_name = HashMap::new();
        let mut errors = Vec::new();
        for f in flows {
            if by_name.contains_key(&f.name) {
                errors.push(format!(
                    "two flows are named `{}` in {}",
                    f.name,
                    dir.display()
                ));
            }
            by_name.insert(f.name.clone(), Arc::new(f));
        }
        if errors.is_empty() {
            Ok(by_name)
        } else {
            Err(AssetError::Flows(errors))
        }
    }

    /// Refuses flows that leave an access number without its flow: a configuration file's
    /// number always needs its flow; a database number needs one it had (`before`), so a node
    /// that never had an ITSP's flow can still reload its own.
    fn flows_in_use(
        dir: &Path,
        flows: &HashMap<String, Arc<ivr::Flow>>,
        access: &AccessTable,
        before: Option<&HashMap<String, Arc<ivr::Flow>>>,
    ) -> Result<(), AssetError> {
        let errors: Vec<String> = access
            .iter()
            .filter_map(|(a, source)| {
                let f = a.flow.as_ref().filter(|_| !a.pinless)?;
                let needed = match source {
                    Source::Config => true,
                    Source::Managed => before.is_some_and(|b| b.contains_key(f)),
                };
                (needed && !flows.contains_key(f)).then(|| {
                    format!(
                        "access number {} names flow `{f}`, which is not in {}",
                        a.number,
                        dir.display()
                    )
                })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AssetError::Flows(errors))
        }
    }

    /// Reads the database's access numbers again and swaps them in with the configuration
    /// file's. A number whose flow this node lacks is kept (its calls are refused with 503)
    /// and logged: another node may have the flow, and refusing would hide every other change.
    pub async fn refresh_access(&self, store: &rating::Store) -> Result<usize, rating::StoreError> {
        // Read under the lock, so an older read can never be swapped in after a newer one.
        let _one = self.change.lock().await;
        let rows = store.access_numbers().await?;
        let table = AccessTable::new(&self.fixed, &rows);
        let live = self.live();
        if *live.access != table {
            for n in table.shadowed() {
                tracing::warn!(number = %n, "access number is in the configuration file and in the database; the configuration file's settings apply");
            }
            for (a, _) in table.iter() {
                if let Some(f) = a.flow.as_ref().filter(|_| !a.pinless) {
                    if !live.flows.contains_key(f) {
                        tracing::warn!(number = %a.number, flow = %f, "access number's flow is not loaded on this node; its calls get 503");
                    }
                }
            }
            let n = table.iter().count();
            self.swap(|l| Live {
                default: l.default.clone(),
                tenants: l.tenants.clone(),
                flows: l.flows.clone(),
                access: Arc::new(table),
            });
            tracing::info!(numbers = n, "access numbers changed");
        }
        Ok(rows.len())
    }

    /// Reads the flow directory again and swaps in all of it, or (on any error) none of it.
    pub async fn reload_flows(&self) -> Result<Vec<String>, AssetError> {
        let _one = self.change.lock().await;
        self.reload_flows_locked().await
    }

    async fn reload_flows_locked(&self) -> Result<Vec<String>, AssetError> {
        let dir = self.flows_dir.clone();
        let flows = tokio::task::spawn_blocking(move || Self::read_flows(&dir))
            .await
            .map_err(|e| AssetError::Io(e.to_string()))??;
        let live = self.live();
        Self::flows_in_use(&self.flows_dir, &flows, &live.access, Some(&live.flows))?;
        let mut names: Vec<String> = flows.keys().cloned().collect();
        names.sort();
        self.swap(|l| Live {
            default: l.default.clone(),
            tenants: l.tenants.clone(),
            flows,
            access: l.access.clone(),
        });
        tracing::info!(flows = names.len(), "flows reloaded");
        Ok(names)
    }

    /// Checks one flow's YAML, writes it as `<name>.yaml` and reloads every flow. A flow that
    /// does not check, or whose `name:` is not `name`, changes nothing on disk or live.
    pub async fn put_flow(&self, name: &str, yaml: &str) -> Result<Vec<String>, AssetError> {
        let file = format!("{name}.yaml");
        let flow = ivr::Flow::parse(yaml, &file, &ivr::catalogue_prompts())
            .map_err(|e| AssetError::Flows(vec![e.to_string()]))?;
        if flow.name != name {
            return Err(AssetError::Invalid(format!(
                "the flow's name is `{}`, not `{name}` as in the path",
                flow.name
            )));
        }
        let _one = self.change.lock().await;
        let path = self.flows_dir.join(&file);
        let old = std::fs::read(&path).ok();
        let tmp = self.flows_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).map_err(io("writing the flow"))?;
        std::fs::rename(&tmp, &path).map_err(io("writing the flow"))?;
        match self.reload_flows_locked().await {
            Ok(names) => Ok(names),
            Err(e) => {
                // The directory as a whole would not load (another file is broken): put the
                // old file back so disk and live agree.
                match old {
                    Some(old) => std::fs::write(&path, old).map_err(io("restoring the flow"))?,
                    None => std::fs::remove_file(&path).map_err(io("removing the flow"))?,
                }
                Err(e)
            }
        }
    }

    /// The tenant's current upload report, if it has a set of its own.
    pub fn prompt_report(&self, tenant: &str) -> Result<Option<String>, AssetError> {
        tenant_ok(tenant)?;
        let Some(dir) = &self.tenant_dir else {
            return Ok(None);
        };
        Ok(std::fs::read_to_string(dir.join(tenant).join("current/report.json")).ok())
    }

    /// The most uploads that were ever unpacked at the same time (one, by design).
    pub fn unpacking_peak(&self) -> usize {
        self.unpacking_peak
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Checks an archive and, if every file is good, stores it as the tenant's set and swaps
    /// it in. `report_json` turns the report into what is kept beside the files.
    pub async fn upload_prompts(
        &self,
        tenant: &str,
        archive: Vec<u8>,
        report_json: impl Fn(&UploadReport) -> String,
    ) -> Result<UploadReport, AssetError> {
        tenant_ok(tenant)?;
        let root = self.tenant_dir.clone().ok_or(AssetError::NoStore)?;
        let default = self.live().default.clone();
        let _permit = tokio::time::timeout(UNPACK_WAIT, self.unpacking.acquire())
            .await
            .map_err(|_| {
                crate::metrics::get().limit_hit("uploads_unpacking");
                AssetError::Busy
            })?
            .map_err(|_| AssetError::Busy)?;
        use std::sync::atomic::Ordering;
        let n = self.unpacking_now.fetch_add(1, Ordering::AcqRel) + 1;
        self.unpacking_peak.fetch_max(n, Ordering::AcqRel);
        let checked = tokio::task::spawn_blocking(move || {
            upload::unpack(&archive).map(|entries| upload::check(entries, &default))
        })
        .await;
        self.unpacking_now.fetch_sub(1, Ordering::AcqRel);
        let checked = checked.map_err(|e| AssetError::Io(e.to_string()))??;
        if !checked.report.errors.is_empty() {
            return Err(AssetError::Refused(Box::new(checked.report)));
        }
        let _one = self.change.lock().await;
        let dir = root.join(tenant);
        std::fs::create_dir_all(&dir).map_err(io("creating the tenant's directory"))?;
        let version = format!("v{}", chrono::Utc::now().timestamp_micros());
        let vdir = dir.join(&version);
        for (lang, name, au) in &checked.files {
            let ldir = vdir.join(lang);
            std::fs::create_dir_all(&ldir).map_err(io("writing the prompt set"))?;
            std::fs::write(ldir.join(format!("{lang}_{name}.au")), au)
                .map_err(io("writing the prompt set"))?;
        }
        std::fs::write(vdir.join("report.json"), report_json(&checked.report))
            .map_err(io("writing the prompt set"))?;
        let link = dir.join(".current.new");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&version, &link).map_err(io("linking the prompt set"))?;
        std::fs::rename(&link, dir.join("current")).map_err(io("linking the prompt set"))?;
        // Older versions are no longer read: calls hold their prompts in memory.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.filter_map(Result::ok) {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('v') && n != version {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let tenant = tenant.to_string();
        self.swap(|l| {
            let mut tenants = l.tenants.clone();
            tenants.insert(tenant.clone(), Arc::new(checked.set.over(&l.default)));
            Live {
                default: l.default.clone(),
                tenants,
                flows: l.flows.clone(),
                access: l.access.clone(),
            }
        });
        tracing::info!(
            tenant,
            files = checked.report.files,
            "prompt set swapped in"
        );
        Ok(checked.report)
    }
}
