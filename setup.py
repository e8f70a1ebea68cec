from setuptools import find_packages, setup

# Every floor is tested: `make test-min` runs the fast suite at exactly these versions (MIN_TORCH and MIN_PINS in
# the Makefile).
# torch is pinned by the Makefile (TORCH_SPEC) before this package is installed; a range here lets users with GPUs
# keep the build they have.
install_requires = [
    # transformers 5 disables torch < 2.6. 2.13 is the oldest torch tested: the CPU build that CI installs from its
    # wheel cache. Every other torch for x86-64 Linux on PyPI is a CUDA build (a 0.5 GB wheel plus several GB of CUDA
    # libraries), which CI cannot fetch in its time, so torch 2.6-2.12 may work but is not tested.
    "torch>=2.13",
    "transformers>=5.23",
    "accelerate>=1.7",
    "datasets>=3.0",
    "huggingface_hub>=1.31",
    "safetensors>=0.8",  # transformers 5.23 requires it
    "numpy>=2.0",  # with numpy 1.24 the pyarrow that pip resolves for datasets (26) refuses to import
    "pillow>=10.0",
    "pyyaml>=6.0",
    "evaluate>=0.4",  # smile_hf.metrics: the top-k / ECE module shipped in the package, loaded by local path
]
# `smile-hf export --format onnx` (smile_hf.onnx_export): torch.onnx.export(dynamo=True) needs onnx and onnxscript,
# running and quantizing the graph onnxruntime. The floors are the versions tested with torch 2.13 (`make test-min`).
ONNX = ["onnx>=1.23.2", "onnxscript>=0.7.2", "onnxruntime>=1.32"]
extras = {
    # matplotlib: the benchmark smoke tests plot; peft: the LoRA tests (installs beside a CPU torch, no torch change)
    # optuna: the hyperparameter_search tests; onnx: the ONNX export tests (wheels, no torch change)
    "test": ["pytest>=8", "scikit-learn>=1.3", "matplotlib>=3.7", "peft>=0.21", "optuna>=3.0", *ONNX],
    "peft": ["peft>=0.21"],
    "tune": ["optuna>=3.0"],  # --hp_search_trials, `trainer.hyperparameter_search(backend="optuna", ...)`
    "onnx": ONNX,  # smile-hf export --format onnx, OnnxImageClassifier
    # --hp_search_backend ray (Ray Tune on a cluster; a large download, not in `test`: its test skips without it)
    "ray": ["ray[tune]>=2.9"],
    "bench": ["matplotlib>=3.7", "scikit-learn>=1.3", "mlxtend>=0.23"],
    # timm_wrapper models; timm needs a torchvision built for the installed torch (see the Install section of docs/quickstart.md)
    "timm": ["timm>=1.0"],
    # `make docs`: the documentation site, built offline (MkDocs Material, API pages from the docstrings). The floors
    # are the versions the site is built with: mkdocs 1.6 brings the `validation` settings strict mode relies on,
    # mkdocstrings-python 2 the griffe 2 whose `on_package` hook docs/griffe_hf_links.py uses.
    "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings>=1.0", "mkdocstrings-python>=2.0",
             "mkdocs-autorefs>=1.4"],
}
extras["dev"] = sorted(set(extras["test"] + extras["bench"] + ["ruff>=0.5"]))

setup(
    name="smile_hf",
    version="0.1.0",
    description="SMILE (Self-Distilled MIxup for Efficient Transfer LEarning) and transfer-learning baselines "
    "for the Hugging Face Trainer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["smile_hf", "smile_hf.*"]),
    package_data={"smile_hf": ["py.typed", "templates/*.md", "evaluate_modules/*/*.py"]},
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras,
    # `smile-hf train ...` (one run, the full driver; examples/run_smile.py is its short script), `smile-hf compare ...`
    # (= examples/compare_methods.py)
    entry_points={"console_scripts": ["smile-hf=smile_hf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
