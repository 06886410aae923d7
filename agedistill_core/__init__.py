
import os as _os

# onnxruntime's Linux wheels ship Microsoft's telemetry client, which writes $TMPDIR/mat-debug-<pid>.log
# and ~/.cache/Microsoft/... in every process; only this variable, set before the first import, stops it.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
