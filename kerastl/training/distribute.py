"""Where training runs: the one place that creates a tf.distribute strategy.

`make_strategy(cfg.distribute)` returns the strategy; the training job opens its `scope()` and
builds models, optimizers and metrics inside it, and Keras' `fit` distributes the
datasets. The batch size in the config is the global batch, split across replicas; losses
are scaled per replica (Keras' compiled losses by Keras, kerastl's own by `replicas()`),
so N replicas take the same step as one device would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

from kerastl.errors import ConfigError, KerastlError

log = logging.getLogger("kerastl")


def tf_config() -> dict | None:
    """TF_CONFIG as a dict, or None when it is not set."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
        cluster, task = value["cluster"], value["task"]
        task_type, index = task["type"], int(task["index"])
        if index >= len(cluster[task_type]):
            raise ValueError(f"task index {index} but only {len(cluster[task_type])} {task_type} address(es)")
    except (ValueError, KeyError, TypeError) as err:
        raise KerastlError(
            f"TF_CONFIG is not valid ({err}); expected e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
        ) from err
    return value


def is_chief() -> bool:
    """True in a single process, and on the chief of a cluster (worker 0 without a chief task)."""
    conf = tf_config()
    if conf is None:
        return True
    task = conf["task"]
    if "chief" in conf["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def task_name() -> str:
    conf = tf_config()
    return "" if conf is None else f"{conf['task']['type']}-{conf['task']['index']}"


def configure_cpu_devices(count: int | None):
    """Splits the CPU into `count` logical devices (must happen before TensorFlow starts)."""
    import tensorflow as tf

    if not count:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(
                f"distribute.cpu_devices: {count} cannot be applied, TensorFlow already started with "
                f"{have} CPU device(s); set it before anything else runs (e.g. from the command line)"
            ) from err


def configure_threads(intra_op: int | None, inter_op: int | None):
    """TensorFlow's CPU thread pools: `intra_op` threads inside one op (a convolution split
    across cores), `inter_op` ops run at once; None keeps TensorFlow's choice (all cores).

    Must happen before TensorFlow starts; when it already has (several runs in one Python
    process, e.g. the tests), the process keeps the threads it started with, said in the log.
    """
    import tensorflow as tf

    threading = tf.config.threading
    for value, get, put in ((intra_op, threading.get_intra_op_parallelism_threads,
                             threading.set_intra_op_parallelism_threads),
                            (inter_op, threading.get_inter_op_parallelism_threads,
                             threading.set_inter_op_parallelism_threads)):
        if value is None or get() == value:
            continue
        try:
            put(value)
        except RuntimeError:
            log.info("TensorFlow already started in this process: its CPU thread settings stay as they are")
            return


def make_strategy(dc):
    """The tf.distribute.Strategy that `distribute:` asks for."""
    import tensorflow as tf

    if dc.strategy == "multi_worker":
        # Created first: MultiWorkerMirroredStrategy must exist before other TF work.
        if tf_config() is None:
            raise ConfigError(
                "distribute.strategy: multi_worker needs the TF_CONFIG environment variable "
                "(cluster addresses and this task); `kerastl train --workers N` sets it on one machine"
            )
        from kerastl.training.keras_workarounds import patch_multi_worker_fit

        patch_multi_worker_fit()
        _patient_coordination()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    configure_cpu_devices(dc.cpu_devices)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if dc.strategy == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    if dc.strategy == "default":
        return tf.distribute.get_strategy()
    if dc.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy((dc.devices or [(gpus or cpus)[0]])[0])
    if dc.strategy == "mirrored":
        devices = dc.devices or gpus or cpus
        return tf.distribute.MirroredStrategy(devices)
    if dc.strategy == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=dc.tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as err:
            raise KerastlError(f"distribute.strategy: tpu: no TPU reachable at {dc.tpu or '(local)'!r}: {err}") from err
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"distribute.strategy: {dc.strategy!r} is not known")


# Seconds without a heartbeat after which TensorFlow's coordination service declares a worker
# dead and aborts the job. Its default, 10 s, is missed by a worker whose cores are shared with
# more busy processes than there are cores (two workers and other work on 2 cores), and the job
# then dies of a "heartbeat timeout" though every worker is alive.
HEARTBEAT_TIMEOUT_S = 120


def _patient_coordination():
    """Configures the coordination service as MultiWorkerMirroredStrategy would (the same
    leader and coordinated jobs) with a longer heartbeat timeout; the strategy then keeps this
    configuration. TensorFlow has no public API for it (tensorflow.python.eager.context), so
    when that moves, TensorFlow's own default stays and a warning says so."""
    import tensorflow as tf

    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context
    except ImportError as err:
        log.warning("TensorFlow's heartbeat timeout stays at its default (%s moved): a worker on busy cores may "
                    "be declared dead", err.name)
        return
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    ctx = context.context()
    if resolver.task_type not in ("chief", "worker") or getattr(ctx, "coordination_service", None) is not None:
        return
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    ctx.configure_coordination_service(service_type="standalone",
                                       service_leader=multi_worker_util.coordination_leader(spec),
                                       coordinated_jobs=jobs, heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000)


def describe(strategy) -> dict:
    conf = tf_config()
    return {
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": len(conf["cluster"].get("worker", [])) + len(conf["cluster"].get("chief", [])) if conf else 1,
    }


@contextlib.contextmanager
def precision(policy: str | None):
    """Sets Keras' global dtype policy for the block (models built inside take it)."""
    import keras

    if not policy:
        yield
        return
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


def sync_batchnorm(model, on: bool):
    """Global-batch BN statistics across replicas (Keras' `synchronized`, read at call time)."""
    from kerastl.models.factory import batchnorm_layers

    for layer in batchnorm_layers(model):
        layer.synchronized = on


def shard_by_data(dataset):
    """Multi-worker input: every worker builds the same pipeline and keeps its share of
    each batch (kerastl's sources are in-memory tensors, not files to split)."""
    import tensorflow as tf

    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
