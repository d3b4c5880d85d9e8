"""What a checkpoint folder holds, as the store records it: regular files, folders (empty and
nested ones too), and symbolic links that stay inside the folder (issue 9, "The restored folder is
the tree the job left").

scan_tree(root) -> Tree. Nothing here reads file contents: that is the store's job, one file at a
time (checkpoint_store.py). A symbolic link whose target leaves the folder (absolute, or climbing
out with `..`, also through other links) is refused: listed in Tree.refused with the reason, and
never followed. Sockets, fifos and devices are skipped (refused too, as they cannot be restored).
"""

import os
import stat

RESERVED_NAMES = ("MANIFEST.json",)  # a root-level file of this name is the agent's, never the job's


class FileEntry(object):
    """A regular file: path (forward-slash, relative), size (bytes), mtime_ns, ino, dev, mode
    (permission bits, e.g. 0o644), ctime_ns (the inode's change time, in ns).

    The mtime is the job's to set: `cp -p`, `rsync -a`, `shutil.copy2`, `tar x` and `touch -r`
    write a file and then give it an older mtime (break test 16: a model copied back with
    `cp -p` after the last declaration looked older than it, and its checkpoint took that
    declaration's step). The ctime is the kernel's: any write, truncate or rename sets it to
    now, and no call sets it back. So whether and when a file changed is read from both
    (changed_ns, identity); only a rename's new path is matched without the ctime
    (moved_identity), as a rename sets it too. blocks: st_blocks (512-byte units allocated)."""

    __slots__ = ("path", "size", "mtime_ns", "ino", "dev", "mode", "ctime_ns", "blocks")

    def __init__(self, path, size, mtime_ns, ino, dev, mode, ctime_ns, blocks=0):
        self.path = path
        self.size = size
        self.mtime_ns = mtime_ns
        self.ino = ino
        self.dev = dev
        self.mode = mode
        self.ctime_ns = ctime_ns
        self.blocks = blocks

    @classmethod
    def of(cls, path, st):
        """The entry for relative path from its os.stat_result."""
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, stat.S_IMODE(st.st_mode), st.st_ctime_ns,
                   st.st_blocks)

    @property
    def truncating(self):
        """True when the file is 0 bytes long with blocks still allocated: open(path, "wb") of an
        existing file is freeing them. That takes ~25 ms for 128 MiB here (longer for GBs), and
        until open() returns the job holds no descriptor for it, so /proc shows no writer, and
        the file's timestamp may be older than a declaration made just before (break test 17:
        a 0-byte model.bin published under the step declared just before the next save)."""
        return self.size == 0 and self.blocks > 0

    @property
    def changed_ns(self):
        """When the file last changed, in ns since the epoch: the later of its mtime and ctime."""
        return max(self.mtime_ns, self.ctime_ns)

    def identity(self):
        """[size, mtime_ns, ino, dev, ctime_ns]: unchanged identity = unchanged file, for the
        store's index and its copy-then-recheck."""
        return [self.size, self.mtime_ns, self.ino, self.dev, self.ctime_ns]

    def moved_identity(self):
        """[size, mtime_ns, ino, dev]: what a rename into place leaves unchanged."""
        return [self.size, self.mtime_ns, self.ino, self.dev]

    def __repr__(self):
        return "FileEntry(%r, size=%d)" % (self.path, self.size)


class Tree(object):
    """files: [FileEntry]; dirs: [{"path", "mode"}] (every folder below the root, parents first);
    symlinks: [{"path", "target"}] (inner links only, target as written); refused: [{"path",
    "target"?, "reason"}] (links leaving the folder, special files)."""

    def __init__(self):
        self.files = []
        self.dirs = []
        self.symlinks = []
        self.refused = []
        self.mtimes = {}  # "." (the root), folder and link paths -> change time (epoch seconds)

    def entry_mtimes(self):
        """[(path, change time in epoch seconds: the later of mtime and ctime)] of the root, every
        folder and every inner link: a folder's time moves when an entry in it is created,
        removed or renamed (capture.py)."""
        return sorted(self.mtimes.items())

    def fingerprint(self):
        """A cheap summary that changes when any file, folder or link changes (no content read)."""
        return ([[f.path, f.size, f.mtime_ns, f.ctime_ns] for f in self.files]
                + [["d:" + d["path"], d["mode"]] for d in self.dirs]
                + [["l:" + s["path"], s["target"]] for s in self.symlinks])


def link_stays_inside(rel_path, target, root):
    """True when the symlink at rel_path (relative to root) with this target resolves inside root,
    following any further links inside root. Absolute targets never count as inside: the folder
    is restored elsewhere, so an absolute path would point at the old place."""
    if os.path.isabs(target):
        return False
    real_root = os.path.realpath(root)
    joined = os.path.normpath(os.path.join(os.path.dirname(rel_path), target))
    if joined == ".." or joined.startswith("../"):
        return False
    resolved = os.path.realpath(os.path.join(root, rel_path))
    return resolved == real_root or resolved.startswith(real_root + os.sep)


def scan_tree(root):
    """Tree of the folder at root (empty Tree when root is missing). Paths sorted; never follows
    a symlink; files named in RESERVED_NAMES at the root are left out."""
    tree = Tree()
    if not os.path.isdir(root):
        return tree
    try:
        st = os.stat(root)
        tree.mtimes["."] = max(st.st_mtime, st.st_ctime)
    except OSError:
        pass
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        names = sorted(dirnames + filenames)
        dirnames[:] = []
        for name in names:
            full = os.path.join(dirpath, name)
            rel = rel_dir + name
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue  # removed while we looked
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(full)
                except OSError:
                    continue
                if link_stays_inside(rel, target, root):
                    tree.symlinks.append({"path": rel, "target": target})
                    tree.mtimes[rel] = max(st.st_mtime, st.st_ctime)
                else:
                    tree.refused.append({"path": rel, "target": target,
                                         "reason": "symbolic link %s -> %s leads outside the checkpoint folder" % (rel, target)})
            elif stat.S_ISDIR(st.st_mode):
                tree.dirs.append({"path": rel, "mode": stat.S_IMODE(st.st_mode)})
                tree.mtimes[rel] = max(st.st_mtime, st.st_ctime)
                dirnames.append(name)
            elif stat.S_ISREG(st.st_mode):
                if rel in RESERVED_NAMES:
                    continue
                tree.files.append(FileEntry.of(rel, st))
            else:
                tree.refused.append({"path": rel, "reason": "%s is not a regular file, folder or symbolic link" % rel})
        dirnames.sort()
    tree.files.sort(key=lambda f: f.path)
    tree.dirs.sort(key=lambda d: d["path"])
    tree.symlinks.sort(key=lambda s: s["path"])
    return tree
