"""No module imports from a layer above it (docs/architecture.md draws the same layers).

Every import of every module under i2v/ is read from its source with ``ast`` -- the ones inside functions too,
since lazy imports are still dependencies -- and the layer of the imported module must not be above the layer of
the importer. The few deliberate exceptions are listed with their reason; an exception no longer used fails too,
so the list stays true.
"""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "i2v"

# module prefix -> layer, bottom (0) to top; the longest matching prefix decides
LAYERS = {
    "i2v.errors": 0,
    # primitives: image and video I/O, the one writer, runtime checks, TOML, procedural data, the tokenizer, the
    # loading toolkit, warps (RIFE warps with them) and camera-move numbers (numpy)
    "i2v.image": 1, "i2v.video": 1, "i2v.outputs": 1, "i2v.latents": 1, "i2v.runtime": 1, "i2v.configs": 1,
    "i2v.data": 1, "i2v.figures": 1, "i2v.text": 1, "i2v.checkpoints": 1, "i2v.motion.warp": 1,
    "i2v.motion.moves": 1,
    "i2v.nn": 2, "i2v.diffusion": 2,
    "i2v.models": 3,
    "i2v.registry": 4,
    # what uses the learned priors (RAFT, Depth Anything, RIFE) lazily
    "i2v.motion": 5, "i2v.interpolate": 5, "i2v.metrics": 5,
    "i2v.pipelines": 6, "i2v.train": 6, "i2v.calibrate": 6, "i2v.evaluate": 6,
    "i2v.commands": 7, "i2v.cli": 7, "i2v.__main__": 7, "i2v": 7,  # the package: i2v.load, i2v.inspect
}

# (importer, imported prefix) -> why it may reach up
EXCEPTIONS = {
    ("i2v.models.builtin.detect", "i2v.pipelines"): "a family's loader (called by registry.load) builds its pipeline",
    ("i2v.models.svd.detect", "i2v.pipelines"): "a family's loader (called by registry.load) builds its pipeline",
    ("i2v.models.wan.detect", "i2v.pipelines"): "a family's loader (called by registry.load) builds its pipeline",
    ("i2v.models.depth_anything.model", "i2v.registry"): "an error says what a wrong file is (torch-free detectors)",
    ("i2v.models.wan.vae", "i2v.registry"): "an error says what a wrong file is (torch-free detectors)",
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} has no layer: add it to LAYERS (and to docs/architecture.md)")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        yield name, (name if is_package else name.rsplit(".", 1)[0]), path


def exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(name: str, package: str, path):
    """(imported module, line) for every i2v import in the file; ``from x import y`` counts as x.y when y is a
    module (``from .. import runtime``), else as x."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if exists(f"{source}.{a.name}") else source for a in node.names]
        else:
            continue
        for t in targets:
            if t == "i2v" or t.startswith("i2v."):
                yield t, node.lineno


def test_no_module_imports_from_a_layer_above_it():
    wrong, used = [], set()
    for name, package, path in modules():
        for target, line in imports(name, package, path):
            if layer(target) <= layer(name):
                continue
            allowed = [key for key in EXCEPTIONS if key[0] == name and (target + ".").startswith(key[1] + ".")]
            if allowed:
                used.update(allowed)
            else:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} (layer {layer(name)}) imports {target} "
                             f"(layer {layer(target)})")
    assert not wrong, "imports from a layer above:\n" + "\n".join(wrong)
    assert used == set(EXCEPTIONS), f"exceptions no longer needed: {set(EXCEPTIONS) - used}"


def test_the_checker_sees_lazy_and_relative_imports():
    """The parser resolves a relative import inside a function to the module it names (the check would pass
    vacuously otherwise)."""
    found = dict(imports("i2v.motion.depth", "i2v.motion", PACKAGE / "motion" / "depth.py"))
    assert "i2v.models.depth_anything.model" in found  # inside estimate_depth()
    found = dict(imports("i2v.models.raft.raft", "i2v.models.raft", PACKAGE / "models" / "raft" / "raft.py"))
    assert "i2v.runtime" in found  # from ... import runtime
