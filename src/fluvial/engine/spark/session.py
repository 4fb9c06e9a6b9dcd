"""Getting a SparkSession: the master, Spark conf pass-through, clear errors.

``master`` is ``local[*]`` by default; ``local-cluster[N,cores,mem]`` starts N
executor processes on this machine (tests); ``spark://host:port`` or
``k8s://...`` in production.  A missing pyspark or Java gives one line saying
what to install.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fluvial.errors import ConfigError, MissingDependency

DEFAULT_MASTER = "local[*]"


@dataclass(frozen=True, kw_only=True)
class SparkConfig:
    """Where and how Spark runs.

    Attributes:
        master: The Spark master URL (``local[*]``, ``local-cluster[2,1,1024]``,
            ``spark://host:7077``, ``k8s://...``).
        conf: Spark settings passed through as they are (``spark.executor.memory`` ...).
        app_name: The application name shown in the Spark UI.
    """

    master: str = DEFAULT_MASTER
    conf: Mapping[str, str] = field(default_factory=dict)
    app_name: str = "fluvial"


def require_pyspark() -> Any:
    """Import pyspark, or fail with the one line that says what to install."""
    try:
        import pyspark
    except ImportError:
        raise MissingDependency("the Spark runners need PySpark: pip install 'fluvial[spark]'") from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise MissingDependency("the Spark runners need Java 17 (PySpark runs on the JVM): install a JDK "
                                "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
    return pyspark


def parse_conf(items: list[str] | None) -> dict[str, str]:
    """``["spark.x=1", ...]`` (the CLI's ``--spark-conf``) as a dict; clear error otherwise."""
    conf: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--spark-conf {item!r}: write KEY=VALUE, e.g. spark.executor.memory=2g")
        conf[key.strip()] = value
    return conf


def get_session(config: SparkConfig | None = None, *, announce: bool = True) -> Any:
    """The SparkSession for ``config`` (an existing one is reused, as Spark does).

    Python workers use this interpreter, so executors import the same fluvial.
    The Spark UI address is printed to stderr when ``announce``.
    """
    config = config or SparkConfig()
    require_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(config.master).appName(config.app_name)
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    for key, value in config.conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: say why in one line
        raise ConfigError(f"Spark could not start with master {config.master!r}: {exc}") from exc
    spark.sparkContext.setLogLevel("WARN")
    if announce:
        url = spark.sparkContext.uiWebUrl
        if url:
            print(f"Spark UI: {url} (master {config.master})", file=sys.stderr)
    return spark
