#!/usr/bin/env bash
# Set up everything vjepa2_ros needs on a fresh Debian 12 / Ubuntu 24.04 machine, idempotently:
# system libraries (apt, only when missing), a virtual environment in .venv, torch (the CPU
# build 2.13.0 when there is no NVIDIA GPU), and the package with its extras (with `ros`, Jazzy's
# rclpy and messages as wheels, unless a sourced ROS install provides rclpy). Re-runs are fast:
# nothing is reinstalled unless setup.py or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VJEPA2_VENV:-.venv}
PY=${PYTHON:-python3}

# -- system packages: headless OpenGL for MuJoCo rendering (EGL or OSMesa), venv support --------
need=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libglib2.0-0; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
"$PY" -c 'import venv, ensurepip' 2>/dev/null || need+=("python3-venv")
if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# -- virtual environment and Python packages ----------------------------------------------------
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# ROS 2: a sourced ROS install (its rclpy on PYTHONPATH, outside the venv) keeps its own rclpy and
# messages; otherwise the `ros` extra installs Jazzy's rclpy and messages as wheels (Python 3.11).
ros=",ros"
if "$VENV/bin/python" -c 'import sys, rclpy; sys.exit(rclpy.__file__.startswith(sys.prefix))' 2>/dev/null; then
  ros=""
fi
stamp="$VENV/.vjepa2_ros-installed"
want=$( (cat setup.py scripts/bootstrap.sh; echo "ros=$ros") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python packages into $VENV (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$VENV/bin/pip" install -q torch                    # CUDA build
    extras="test,sim,data,train,bench,gpu$ros"
  else
    "$VENV/bin/pip" install -q torch==2.13.0            # CPU build; a plain 'torch' pulls CUDA wheels
    extras="test,sim,data,train,bench$ros"
  fi
  "$VENV/bin/pip" install -q -e ".[$extras]"
  # The Panda + hand MJCF; its declared dependencies (dm_control and friends) are not needed.
  "$VENV/bin/pip" install -q --no-deps "dm-robotics-panda==0.4.8"
  echo "$want" > "$stamp"
fi
