"""The contract between ganrun and the networks it trains, checked once when they are built.

ganrun trains any ``torch.nn.Module`` named by ``model.generator._target_`` and
``model.discriminator._target_`` (ganrun's own or a user's, e.g.
``ganrun model.generator._target_=mypkg.nets.MyGenerator``) if it keeps this contract
(the full text, with examples: ``docs/networks.md``):

- Constructors take keyword arguments. G gets ``z_dim`` (size of G's input vector, codes
  included) and ``data_shape`` (one example: ``(C, H, W)`` images, ``(2,)`` points); D gets
  ``data_shape``. ``num_classes`` is passed to both when the run is class-conditional
  (required then, optional otherwise); ``bounded_output`` (True on image data) only to a G
  that declares it. Other keys of ``model.generator`` / ``model.discriminator`` go to a
  constructor that declares them (or takes ``**kwargs``); the recipe's settings for
  ganrun's own networks (``width``, ``norm``, ...) are left out for one that does not.
- ``generator(z, labels)``: z (N, z_dim) float -> (N, *data_shape) float, in [-1, 1] on
  image data (end with tanh), unbounded on 2-D data.
- ``discriminator(x, labels)``: x (N, *data_shape) -> raw scores (N,) or (N, 1): logits or
  critic values, no sigmoid.
- ``labels``: always passed, as the second positional argument: (N,) int64 class indices
  in a class-conditional run, else None or the batch's labels, to be ignored.
- InfoGAN (``model.module`` an InfoGANModule): D also has ``features(x, labels)`` ->
  (N, feature_dim) and an int ``feature_dim``, which Q's head reads.
- Under a gradient penalty (``loss=wgan_gp``, ``term=r1``) the critic has no batch norm.
- LAPGAN and MSG-GAN train networks of their own kinds; a user's class is refused there.

``architecture_nodes`` and ``build_network`` (used by ``ganrun.config.build.build_networks``)
locate the classes and call their constructors; ``check_networks`` (used by
``build_module``, so by preflight before anything is written) runs G and D once on a
small batch. Each broken rule is one ``ConfigError`` line naming the class and what is
missing.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from ganrun.errors import ConfigError

DOCS = "see docs/networks.md"
OWN_PACKAGE = "ganrun."
# Examples in the probe batch: more than any channel count or coordinate count, so that
# a transposed or flattened output cannot pass for (N, *data_shape) by coincidence.
PROBE_SIZE = 5
# What a training module may override to feed D something other than (G's batch, the
# real batch): a module that does trains networks of its own kinds (LAPGAN, MSG-GAN).
STEP_METHODS = ("discriminator_views", "generator_views", "generate_for_discriminator", "real_for_discriminator")
_NOTES_PRINTED: set[str] = set()


# ------------------------------------------------------------------ the classes
def locate(target: str, key: str) -> Any:
    """The object ``target`` names (``package.module.Class``), or one ConfigError line
    naming ``key``'s ``_target_`` and why it cannot be imported."""

    def refuse(reason: str, advice: str = "put the package that defines it on PYTHONPATH or install it") -> ConfigError:
        return ConfigError(f"{key}._target_={target} cannot be imported ({reason}); {advice} ({DOCS})")

    parts = str(target).split(".")
    if len(parts) < 2 or not all(parts):
        raise refuse("not a dotted path", "give the full path package.module.Class, e.g. mypkg.nets.MyGenerator")
    missing: Optional[ModuleNotFoundError] = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module, then attributes
        module_name = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and (module_name + ".").startswith(error.name + "."):
                missing = missing or error  # this prefix is no module: a class nested deeper, or absent
                continue
            raise refuse(f"importing {module_name} failed: {first_line(error)}", "install what it imports") from None
        except Exception as error:  # noqa: BLE001 - the user's module failed to import: say why, in one line
            raise refuse(
                f"importing {module_name} failed: {type(error).__name__}: {first_line(error)}", f"fix {module_name}"
            ) from None
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                reason = first_line(missing) if missing else f"{module_name} has no {'.'.join(parts[cut:])}"
                raise refuse(reason, "check the name")  # the package imports: the path is misspelt
            found = getattr(found, attribute)
        return found
    raise refuse(first_line(missing) if missing else f"no module {parts[0]}")


def is_users(node: DictConfig) -> bool:
    """Whether a network node names a class from outside ganrun (a user's)."""
    return not str(node.get("_target_", "")).startswith(OWN_PACKAGE)


def node_key(node: DictConfig) -> str:
    """The node's dotted key, e.g. ``model.generator``."""
    return node._get_full_key(None) or "model"


def architecture_nodes(model_cfg: DictConfig, is_image: bool) -> tuple[DictConfig, DictConfig]:
    """The ``model.generator`` and ``model.discriminator`` nodes to build, each checked to
    name an importable class. On 2-D data ``model.toy``'s networks replace ganrun's own
    image networks (DCGAN's); a user's class is kept."""
    toy = None if is_image else model_cfg.get("toy")
    nodes = []
    for role in ("generator", "discriminator"):
        node = model_cfg[role]
        if toy is not None and not is_users(node):
            node = toy[role]
        if not isinstance(node, DictConfig) or not node.get("_target_"):
            raise ConfigError(
                f"{node_key(model_cfg)}.{role} has no _target_; name the class, "
                f"e.g. {node_key(model_cfg)}.{role}._target_=mypkg.nets.My{role.title()} ({DOCS})"
            )
        locate(node._target_, node_key(node))
        nodes.append(node)
    return nodes[0], nodes[1]


# ------------------------------------------------------------- the constructor
def build_network(node: DictConfig, **passed: Any) -> Any:
    """``node``'s network built with ganrun's keyword arguments ``passed`` (see
    ``constructor_call``), through ``ganrun.config.build.instantiate``."""
    from ganrun.config.build import instantiate

    node, arguments = constructor_call(node, **passed)
    return instantiate(node, **arguments)


def constructor_call(node: DictConfig, **passed: Any) -> tuple[DictConfig, dict]:
    """(the node, the keyword arguments) to build ``node``'s class with. ``passed``: what
    ganrun gives every network of this kind; each must be accepted except ``bounded_output``
    and ``num_classes=0`` (unconditional), which go only to a constructor that declares them.
    Keys of the node the constructor does not declare are left out (``unused_settings``)."""
    key, target = node_key(node), node._target_
    parameters = constructor_parameters(locate(target, key))
    if parameters is None:
        return node, passed
    required = [name for name, value in passed.items() if not _optional(name, value)]
    for name in required:
        if not accepts(parameters, name):
            raise ConfigError(
                f"{key}._target_={target}: its constructor does not accept {name} "
                f"(ganrun passes {', '.join(required)}; {DOCS})"
            )
    given = set(passed) | {name for name in node if not str(name).startswith("_")}
    for name, parameter in parameters.items() if "_args_" not in node else ():
        needed = parameter.default is inspect.Parameter.empty and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if needed and name not in given:
            raise ConfigError(
                f"{key}._target_={target}: its constructor needs {name}, which neither ganrun "
                f"({', '.join(required)}) nor {key} gives; set +{key}.{name}=VALUE or give it a default ({DOCS})"
            )
    unused = unused_settings(node, parameters)
    if unused:
        node = node.copy()  # keeps its parent: interpolations and full key names still resolve
        with open_dict(node):
            for name in unused:
                del node[name]
    return node, {name: value for name, value in passed.items() if accepts(parameters, name)}


def _optional(name: str, value: Any) -> bool:
    """``bounded_output`` is a hint a G may ignore; ``num_classes=0`` means no labels."""
    return name == "bounded_output" or (name == "num_classes" and not value)


def constructor_parameters(target: Any) -> Optional[dict[str, inspect.Parameter]]:
    """The constructor's parameters by name, or None when Python cannot tell."""
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None


def accepts(parameters: dict[str, inspect.Parameter], name: str) -> bool:
    """Whether a constructor with these parameters takes the keyword argument ``name``."""
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return True
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def unused_settings(node: DictConfig, parameters: Optional[dict] = None) -> list[str]:
    """Keys of a network node that its class's constructor does not declare: the recipe's
    settings for ganrun's own networks (``width``, ``norm``, ``hidden``) when a user's class
    replaces them. Empty for ganrun's own classes."""
    if parameters is None:
        parameters = constructor_parameters(locate(node._target_, node_key(node)))
    if parameters is None:
        return []
    return [str(name) for name in node if not str(name).startswith("_") and not accepts(parameters, str(name))]


# --------------------------------------------------------- the built networks
def check_networks(
    cfg: DictConfig,
    generator: Any,
    discriminator: Any,
    *,
    data_shape: Sequence[int],
    num_classes: int,
    is_image: bool,
    terms: Sequence = (),
) -> None:
    """Refuse (one ConfigError line) networks that break the contract: not an
    ``nn.Module``, a user's class in a family with its own network kinds, batch norm in a
    user's critic under a gradient penalty, or outputs of the wrong shape on a batch of
    ``PROBE_SIZE`` (run in eval mode without gradients, the global RNG left as it was).
    Prints one ``note:`` line naming recipe settings a user's class does not take."""
    from ganrun.config.build import build_latent

    generator_node, discriminator_node = architecture_nodes(cfg.model, is_image)
    for node, network in ((generator_node, generator), (discriminator_node, discriminator)):
        if not isinstance(network, nn.Module):
            raise ConfigError(f"{describe(node)}: it built a {type(network).__name__}, not a torch.nn.Module ({DOCS})")
    module_class = locate(cfg.model.module._target_, "model.module")
    if has_own_network_kinds(module_class):
        for node in (generator_node, discriminator_node):
            if is_users(node):
                raise ConfigError(
                    f"{describe(node)}: model.module={cfg.model.module._target_} trains networks of its own kind; "
                    "bring-your-own networks work with GANModule and InfoGANModule recipes "
                    f"(model=gan, cgan, dcgan, lsgan, wgan, wgan_gp, infogan; {DOCS})"
                )
        return
    note_unused_settings(generator_node, discriminator_node)
    if is_users(discriminator_node):
        check_critic_norm(discriminator_node, discriminator, terms)
    probe = Probe(build_latent(cfg.model), tuple(data_shape), num_classes, is_image)
    fake = probe.generator(generator_node, generator)
    probe.discriminator(discriminator_node, discriminator, fake)
    if _is_infogan(module_class):
        probe.features(discriminator_node, discriminator, fake)


def describe(node: DictConfig) -> str:
    return f"{node_key(node)}._target_={node._target_}"


def has_own_network_kinds(module_class: Any) -> bool:
    """Whether a training module feeds D something other than (G's batch, the real batch)."""
    from ganrun.training.module import GANModule

    if not (isinstance(module_class, type) and issubclass(module_class, GANModule)):
        return False
    return any(
        getattr(module_class, name) is not getattr(GANModule, name) for name in STEP_METHODS if hasattr(GANModule, name)
    )


def _is_infogan(module_class: Any) -> bool:
    from ganrun.training.infogan import InfoGANModule

    return isinstance(module_class, type) and issubclass(module_class, InfoGANModule)


def note_unused_settings(*nodes: DictConfig) -> None:
    """One ``note:`` line (once per process) naming the keys not passed to a user's class."""
    unused = [f"{node_key(node)}.{name}" for node in nodes if is_users(node) for name in unused_settings(node)]
    if not unused:
        return
    note = (
        f"note: not passed to your networks (their constructors do not take them): {', '.join(unused)}; "
        f"declare a parameter to receive one ({DOCS})"
    )
    if note not in _NOTES_PRINTED:
        _NOTES_PRINTED.add(note)
        print(note, flush=True)


def check_critic_norm(node: DictConfig, discriminator: nn.Module, terms: Sequence) -> None:
    """A per-example gradient penalty cannot be used with batch norm in a user's critic."""
    from ganrun.objectives.terms import GradientPenalty

    penalty = next((term for term in terms if isinstance(term, GradientPenalty)), None)
    layer = next(
        (name for name, m in discriminator.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)), None
    )
    if penalty is None or layer is None:
        return
    raise ConfigError(
        f"{describe(node)}: {getattr(penalty, 'described_as', 'a gradient penalty')} cannot be used with the batch norm "
        f"in its critic ({layer}: {type(discriminator.get_submodule(layer)).__name__}): the penalty is per example and "
        f"batch norm mixes a batch's examples; use layer norm or none, or a loss without a penalty (ns, hinge, ls, wgan; {DOCS})"
    )


class Probe:
    """G and D run once on a small random batch, as the training step calls them."""

    def __init__(self, latent: Any, data_shape: tuple, num_classes: int, is_image: bool) -> None:
        self.data_shape, self.num_classes, self.is_image = data_shape, num_classes, is_image
        stream = torch.Generator().manual_seed(0)  # its own RNG: the run's random stream is untouched
        self.noise = latent.sample(PROBE_SIZE, generator=stream)
        self.labels = torch.randint(num_classes, (PROBE_SIZE,), generator=stream) if num_classes else None

    def generator(self, node: DictConfig, network: nn.Module) -> torch.Tensor:
        """G's output for the probe noise, refused unless (N, *data_shape), finite, and in [-1, 1] on images."""
        out = self.run(node, network, "generator(z, labels)", self.noise)
        expected = (PROBE_SIZE, *self.data_shape)
        if tuple(out.shape) != expected:
            raise ConfigError(
                f"{describe(node)}: generator(z, labels) returned shape {tuple(out.shape)} for z of shape "
                f"{tuple(self.noise.shape)}; ganrun needs (N, *data_shape) = {expected} ({DOCS})"
            )
        if not torch.isfinite(out).all():
            raise ConfigError(f"{describe(node)}: generator(z, labels) returned nan or inf for z ~ N(0, I) ({DOCS})")
        if self.is_image and out.abs().max() > 1.0 + 1e-4:
            raise ConfigError(
                f"{describe(node)}: generator(z, labels) returned values up to {out.abs().max():.3g} on "
                "image data, which live in [-1, 1]; end the generator with torch.tanh "
                f"(ganrun passes bounded_output=True to a constructor that takes it; {DOCS})"
            )
        return out

    def discriminator(self, node: DictConfig, network: nn.Module, fake: torch.Tensor) -> None:
        """D's output for G's probe batch, refused unless one score per example: (N,) or (N, 1)."""
        out = self.run(node, network, "discriminator(x, labels)", fake)
        if tuple(out.shape) not in ((PROBE_SIZE,), (PROBE_SIZE, 1)):
            raise ConfigError(
                f"{describe(node)}: discriminator(x, labels) returned shape {tuple(out.shape)} for x of shape "
                f"{tuple(fake.shape)}; ganrun needs one raw score per example, shape ({PROBE_SIZE},) or "
                f"({PROBE_SIZE}, 1) ({DOCS})"
            )

    def features(self, node: DictConfig, network: nn.Module, fake: torch.Tensor) -> None:
        """InfoGAN's Q head reads ``features(x, labels)`` (N, feature_dim) of a ``feature_dim`` set by D."""
        name = type(network).__name__
        if not callable(getattr(network, "features", None)):
            raise ConfigError(
                f"{describe(node)}: InfoGAN's Q head reads the discriminator's features, but {name} has no "
                f"features() method; add features(x, labels=None) -> (N, feature_dim) and an int feature_dim ({DOCS})"
            )
        feature_dim = getattr(network, "feature_dim", None)
        if not isinstance(feature_dim, int) or isinstance(feature_dim, bool) or feature_dim < 1:
            raise ConfigError(
                f"{describe(node)}: InfoGAN's Q head needs {name}.feature_dim, the width of features()'s "
                f"output (a positive int), got {feature_dim!r} ({DOCS})"
            )
        out = self.run(node, network, "features(x, labels)", fake, call=network.features)
        if tuple(out.shape) != (PROBE_SIZE, feature_dim):
            raise ConfigError(
                f"{describe(node)}: features(x, labels) returned shape {tuple(out.shape)}; with "
                f"feature_dim={feature_dim} InfoGAN needs ({PROBE_SIZE}, {feature_dim}) ({DOCS})"
            )

    def run(
        self, node: DictConfig, network: nn.Module, call_text: str, inputs: torch.Tensor, call=None
    ) -> torch.Tensor:
        """``call(inputs, labels)`` (default: the network) in eval mode, without gradients;
        a one-line refusal when it takes no labels argument, fails, or returns no float tensor."""
        from ganrun.training.sampling import eval_mode

        call = call or network
        if not takes_labels(call):
            usage = (
                "this run is class-conditional: labels are (N,) int64 class indices"
                if self.num_classes
                else "labels are None or the batch's labels, which an unconditional network ignores"
            )
            raise ConfigError(
                f"{describe(node)}: ganrun calls {call_text} but {type(network).__name__}."
                f"{'forward' if call is network else call.__name__} takes no labels argument "
                f"({usage}); add a labels=None parameter ({DOCS})"
            )
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad(), eval_mode(network):
                out = call(inputs, self.labels)
        except Exception as error:  # noqa: BLE001 - the user's code failed on a valid batch: say where, in one line
            raise ConfigError(
                f"{describe(node)}: {call_text} failed on a batch of shape {tuple(inputs.shape)}: "
                f"{type(error).__name__}: {first_line(error)} ({DOCS})"
            ) from None
        if not torch.is_tensor(out) or not out.is_floating_point():
            got = f"a {out.dtype} tensor" if torch.is_tensor(out) else f"a {type(out).__name__}"
            raise ConfigError(f"{describe(node)}: {call_text} returned {got}; ganrun needs a float tensor ({DOCS})")
        return out


def takes_labels(call: Any) -> bool:
    """Whether ``call(x, labels)`` passes labels positionally (two positional parameters or *args)."""
    if isinstance(call, nn.Module):
        call = call.forward  # a module's __call__ takes (*args, **kwargs)
    try:
        parameters = list(inspect.signature(call).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [
        p for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
