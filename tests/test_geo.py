"""geo.Classifier and geodb.build_country_db against real .mmdb files built in tmp_path."""

from __future__ import annotations

import ipaddress
import random
import shutil
import subprocess
import sys
from pathlib import Path

import geoip2.database
import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from smartdns.geo import UNKNOWN, Classifier, GeoDatabaseError, Location
from smartdns.geodb import GeoDbBuildError, build_country_db

REPO = Path(__file__).resolve().parent.parent
# What octoDNS's geo data says for the countries used here (the caller supplies it in production).
CONTINENT_OF = {"CN": "AS", "JP": "AS", "TR": "AS", "US": "NA", "AU": "OC", "NL": "EU", "DE": "EU", "CH": "EU"}


def make_db(tmp_path: Path, name: str, rows: str, **kwargs: object) -> Path:
    csv = tmp_path / f"{name}.csv"
    csv.write_text(rows)
    out = tmp_path / f"{name}.mmdb"
    build_country_db(csv, out, **kwargs)  # type: ignore[arg-type]
    return out


def make_raw_db(tmp_path: Path, name: str, records: dict[str, dict], ip_version: int = 6) -> Path:
    """A database written directly with mmdb_writer, for layouts build_country_db never writes."""
    writer = MMDBWriter(ip_version=ip_version, ipv4_compatible=ip_version == 6, database_type="GeoIP2-City")
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    out = tmp_path / f"{name}.mmdb"
    writer.to_db_file(str(out))
    return out


@pytest.fixture
def country_db(tmp_path: Path) -> Path:
    return make_db(
        tmp_path,
        "country",
        "# comment\n\nnetwork,country,continent\n"
        "1.0.1.0/24,CN,AS\n2400:da00::/32,CN\n193.0.0.0/21,NL,EU\n"
        # supernet listed after its subnet: the subnet must still win
        "10.1.0.0/24,CN\n10.0.0.0/8,JP\n",
        continent_of=CONTINENT_OF,
    )


# --- lookups -----------------------------------------------------------------------------


def test_ipv4_lookup(country_db: Path) -> None:
    clf = Classifier([country_db])
    assert clf.locate("1.0.1.5") == Location("AS", "CN", None, 24, f"mmdb:{country_db}")
    assert clf.locate("193.0.7.255") == Location("EU", "NL", None, 21, f"mmdb:{country_db}")


def test_ipv6_lookup(country_db: Path) -> None:
    clf = Classifier([country_db])
    assert clf.locate("2400:da00::1") == Location("AS", "CN", None, 32, f"mmdb:{country_db}")
    assert clf.locate("2400:da00:ffff::abcd").prefixlen == 32


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(country_db: Path) -> None:
    # maxminddb reports the IPv4 prefix length (not 96 + 24) for IPv4 in an IPv6 tree.
    clf = Classifier([country_db])
    assert clf.locate("::ffff:1.0.1.5") == clf.locate("1.0.1.5")
    assert clf.locate("::ffff:1.0.1.5").prefixlen == 24


def test_prefixlen_is_the_database_network(country_db: Path) -> None:
    clf = Classifier([country_db])
    inner = clf.locate("10.1.0.9")
    assert (inner.country, inner.prefixlen) == ("CN", 24)
    # The /8 is stored split around the /24: each address gets the block it really fell in,
    # which is what an ECS scope must be (the answer is not valid for the whole /8).
    assert (clf.locate("10.1.1.9").country, clf.locate("10.1.1.9").prefixlen) == ("JP", 24)
    assert (clf.locate("10.0.0.1").country, clf.locate("10.0.0.1").prefixlen) == ("JP", 16)
    assert (clf.locate("10.128.0.1").country, clf.locate("10.128.0.1").prefixlen) == ("JP", 9)


def test_first_file_with_a_country_wins(tmp_path: Path) -> None:
    a = make_db(tmp_path, "a", "8.8.8.0/24,US\n")
    b = make_db(tmp_path, "b", "8.8.8.0/24,DE\n9.9.9.0/24,CH\n")
    assert Classifier([a, b]).locate("8.8.8.8").country == "US"
    assert Classifier([b, a]).locate("8.8.8.8").country == "DE"
    # no record in the first file: the second answers
    assert Classifier([a, b]).locate("9.9.9.9") == Location(None, "CH", None, 24, f"mmdb:{b}")


def test_city_layout_registered_country_and_fallthrough(tmp_path: Path) -> None:
    city = make_raw_db(
        tmp_path,
        "city",
        {
            "4.0.0.0/24": {
                "continent": {"code": "NA"},
                "country": {"iso_code": "US"},
                "registered_country": {"iso_code": "US"},
                "subdivisions": [{"iso_code": "CA"}, {"iso_code": "XX"}],
                "city": {"names": {"en": "Mountain View"}},
            },
            "5.0.0.0/24": {"continent": {"code": "EU"}, "registered_country": {"iso_code": "DE"}},
            "6.0.0.0/24": {"continent": {"code": "EU"}},  # no country at all
            "2001:db8::/32": {"country": {"iso_code": "JP"}, "subdivisions": []},
        },
    )
    second = make_db(tmp_path, "second", "6.0.0.0/24,NL,EU\n")
    clf = Classifier([city, second])
    assert clf.locate("4.0.0.1") == Location("NA", "US", "CA", 24, f"mmdb:{city}")
    assert clf.locate("5.0.0.1") == Location("EU", "DE", None, 24, f"mmdb:{city}")
    assert clf.locate("6.0.0.1") == Location("EU", "NL", None, 24, f"mmdb:{second}")
    assert clf.locate("2001:db8::1") == Location(None, "JP", None, 32, f"mmdb:{city}")
    # no country in any file: the embedded data answers (6.0.0.0/8 is registered in the US)
    assert Classifier([city]).locate("6.0.0.1").source == "embedded"


def test_ipv4_only_database_skips_ipv6(tmp_path: Path) -> None:
    v4 = make_raw_db(tmp_path, "v4", {"1.0.1.0/24": {"country": {"iso_code": "CN"}}}, ip_version=4)
    clf = Classifier([v4])
    assert clf.locate("1.0.1.1") == Location(None, "CN", None, 24, f"mmdb:{v4}")
    assert clf.locate("2400:da00::1").source == "embedded"


def test_embedded_fallback() -> None:
    clf = Classifier(continent_of=CONTINENT_OF)
    assert clf.locate("114.114.114.114") == Location("AS", "CN", None, None, "embedded")
    assert clf.locate("8.8.8.8") == Location("NA", "US", None, None, "embedded")
    assert clf.locate("2400:da00::1").country == "CN"
    assert clf.locate("::ffff:114.114.114.114").country == "CN"
    # without the octoDNS continent mapping the embedded data has no continent
    assert Classifier().locate("114.114.114.114") == Location(None, "CN", None, None, "embedded")


def test_mmdb_miss_falls_back_to_embedded(country_db: Path) -> None:
    assert Classifier([country_db], CONTINENT_OF).locate("8.8.8.8") == Location("NA", "US", None, None, "embedded")


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "172.16.0.1", "192.168.1.1", "garbage", "", "1.2.3", " 8.8.8.8", "1.2.3.4/24"]
)
def test_unknown(country_db: Path, address: str) -> None:
    assert Classifier([country_db], CONTINENT_OF).locate(address) is UNKNOWN


def test_continent_of_overrides_database(tmp_path: Path) -> None:
    db = make_db(tmp_path, "tr", "5.0.0.0/24,TR,EU\n")
    assert Classifier([db]).locate("5.0.0.1").continent == "EU"
    assert Classifier([db], {"TR": "AS"}).locate("5.0.0.1").continent == "AS"


# --- matches -----------------------------------------------------------------------------

CN = Location("AS", "CN", None, 24, "embedded")
US_CA = Location("NA", "US", "CA", 24, "mmdb:x")


@pytest.mark.parametrize(
    ("location", "geo", "expected"),
    [
        (CN, "AS", True),
        (CN, "AS-CN", True),
        (CN, "AS-JP", False),
        (CN, "EU", False),
        (CN, "EU-CN", False),
        (CN, "AS-CN-BJ", False),  # no subdivision known: a province rule does not match
        (US_CA, "NA", True),
        (US_CA, "NA-US", True),
        (US_CA, "NA-US-CA", True),
        (US_CA, "NA-US-NY", False),
        (US_CA, "NA-CA", False),
        (US_CA, "NA-US-CA-X", False),
        (Location(None, "CN", None, None, "embedded"), "AS-CN", False),
        (UNKNOWN, "AS", False),
        (UNKNOWN, "", False),
        (UNKNOWN, "--", False),
    ],
)
def test_matches(location: Location, geo: str, expected: bool) -> None:
    assert location.matches(geo) is expected


# --- cache -------------------------------------------------------------------------------


def test_cache_is_bounded(country_db: Path) -> None:
    clf = Classifier([country_db], CONTINENT_OF, cache_size=64)
    rng = random.Random(7)
    for _ in range(3000):
        if rng.random() < 0.5:
            address = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        else:
            address = str(ipaddress.IPv6Address(rng.getrandbits(128)))
        clf.locate(address)
        assert clf._cache.cache_info().currsize <= 64
    assert clf._cache.cache_info().currsize == 64


def test_cache_hits_return_the_same_answer(country_db: Path) -> None:
    clf = Classifier([country_db], cache_size=4)
    first = clf.locate("1.0.1.5")
    assert clf.locate("1.0.1.5") is first
    assert clf._cache.cache_info().hits == 1
    assert Classifier([country_db], cache_size=0).locate("1.0.1.5") == first


def test_negative_cache_size_rejected() -> None:
    with pytest.raises(ValueError):
        Classifier(cache_size=-1)


# --- database errors -------------------------------------------------------------------------


def test_missing_database(tmp_path: Path) -> None:
    path = tmp_path / "nope.mmdb"
    with pytest.raises(GeoDatabaseError) as err:
        Classifier([path])
    assert err.value.path == str(path)
    assert "No such file" in err.value.reason
    assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize("content", [b"", b"not a database", bytes(range(256)) * 20])
def test_corrupt_database(tmp_path: Path, country_db: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(content)
    with pytest.raises(GeoDatabaseError) as err:
        Classifier([country_db, bad])
    assert err.value.path == str(bad)
    assert "not a valid MaxMind DB" in err.value.reason


def test_truncated_database(tmp_path: Path, country_db: Path) -> None:
    bad = tmp_path / "truncated.mmdb"
    bad.write_bytes(country_db.read_bytes()[:100])
    with pytest.raises(GeoDatabaseError):
        Classifier([bad])


def test_corrupt_record_falls_through_instead_of_raising(tmp_path: Path, country_db: Path) -> None:
    # Damage the data section (after the search tree and its 16 zero bytes): opening still
    # works, the lookup fails inside maxminddb, and the query path must carry on.
    data = bytearray(country_db.read_bytes())
    with maxminddb.open_database(str(country_db)) as reader:
        meta = reader.metadata()
        tree_size = meta.node_count * meta.record_size * 2 // 8
    data[tree_size + 16 : tree_size + 56] = b"\xff" * 40
    bad = tmp_path / "damaged.mmdb"
    bad.write_bytes(bytes(data))
    assert Classifier([bad], CONTINENT_OF).locate("1.0.1.5") == Location("AS", "CN", None, None, "embedded")


# --- building ----------------------------------------------------------------------------


def test_build_layout(tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("\ufeffnetwork,country\n# c\n\n1.0.1.0/24,CN\n 2001:4860::/32 , US , NA \n5.0.0.0/24,ZZ\n")
    out = tmp_path / "out.mmdb"
    assert build_country_db(csv, out, {"CN": "AS"}, country_names={"CN": "China"}) == 3
    with maxminddb.open_database(str(out)) as reader:
        meta = reader.metadata()
        assert (meta.database_type, meta.ip_version) == ("GeoIP2-Country", 6)
        assert reader.get("1.0.1.1") == {
            "continent": {"code": "AS", "names": {"en": "Asia"}},
            "country": {"iso_code": "CN", "names": {"en": "China"}},
            "registered_country": {"iso_code": "CN", "names": {"en": "China"}},
        }
        assert reader.get("2001:4860::8888")["continent"]["code"] == "NA"  # type: ignore[index]
        assert "continent" not in reader.get("5.0.0.1")  # type: ignore[operator]
    # the geoip2 library (what other tools use) reads it too
    with geoip2.database.Reader(str(out)) as reader2:
        response = reader2.country("2001:4860::1")
        assert (response.country.iso_code, response.continent.code) == ("US", "NA")
    assert not list(tmp_path.glob("*.tmp*"))  # the temporary file was renamed into place


BAD_ROWS = [
    ("1.0.1.5/24,CN", "bad network"),  # host bits set
    ("1.2.3.999/24,CN", "bad network"),
    ("nonsense,CN", "bad network"),
    ("1.0.1.0/33,CN", "bad network"),
    ("1.0.1.0/24,cn", "bad country code"),
    ("1.0.1.0/24,CHN", "bad country code"),
    ("1.0.1.0/24,C1", "bad country code"),
    ("1.0.1.0/24,", "bad country code"),
    ("1.0.1.0/24,CN,XX", "bad continent code"),
    ("1.0.1.0/24", "expected network,country[,continent]"),
    ("1.0.1.0/24,CN,AS,extra", "expected network,country[,continent]"),
    ("8.8.8.0/24,US", "duplicate network 8.8.8.0/24 (first on line 3)"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
def test_bad_rows_name_file_and_line(tmp_path: Path, row: str, reason: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(f"network,country,continent\n# comment\n8.8.8.0/24,US\n\n{row}\n")
    with pytest.raises(GeoDbBuildError) as err:
        build_country_db(csv, tmp_path / "out.mmdb")
    assert str(err.value).startswith(f"{csv}:5: {reason}")
    assert not (tmp_path / "out.mmdb").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("row", "reason"), [
    ("1.0.1.0/24,ZZ", "unknown country code 'ZZ': not an ISO 3166-1 alpha-2 code"),
    ("1.0.1.0/24,UK", "unknown country code 'UK'"),  # the ISO code is GB
    ("1.0.1.0/24,US,EU", "continent EU contradicts country US, which is in NA"),
    ("1.0.1.0/24,CN,NA", "continent NA contradicts country CN, which is in AS"),
])
def test_geodb_build_rejects_unknown_countries_and_contradicting_continents(tmp_path: Path, row: str,
                                                                            reason: str) -> None:
    """A typo in a country classifies nobody; a wrong continent makes `geos: [EU]` match a US network."""
    csv = tmp_path / "rows.csv"
    csv.write_text(f"network,country,continent\n8.8.8.0/24,US,NA\n{row}\n")
    result = subprocess.run([sys.executable, "-m", "smartdns", "geodb", "build", str(csv), "-o",
                             str(tmp_path / "out.mmdb")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == f"smartdns: {csv}:3: {reason}" or result.stderr.startswith(
        f"smartdns: {csv}:3: {reason}"), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.mmdb").exists()
    csv.write_text("network,country,continent\n8.8.8.0/24,US,NA\n1.0.1.0/24,CN\n2.0.0.0/24,GB,EU\n")
    result = subprocess.run([sys.executable, "-m", "smartdns", "geodb", "build", str(csv), "-o",
                             str(tmp_path / "out.mmdb")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "wrote 3 networks" in result.stdout, result.stderr


def test_build_errors_without_a_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("# nothing\nnetwork,country\n")
    with pytest.raises(GeoDbBuildError, match="no networks"):
        build_country_db(empty, tmp_path / "out.mmdb")
    with pytest.raises(GeoDbBuildError, match="cannot read"):
        build_country_db(tmp_path / "missing.csv", tmp_path / "out.mmdb")
    with pytest.raises(GeoDbBuildError, match="cannot write"):
        build_country_db(REPO / "geodb" / "sample.csv", tmp_path / "no-such-dir" / "out.mmdb")


def test_mmdblookup_reads_the_built_file(country_db: Path) -> None:
    binary = shutil.which("mmdblookup")
    if binary is None:
        pytest.skip("mmdblookup not installed (Debian package mmdb-bin)")
    for address, expected in [("1.0.1.5", "CN"), ("2400:da00::1", "CN"), ("193.0.0.1", "NL")]:
        result = subprocess.run(
            [binary, "--file", str(country_db), "--ip", address, "country", "iso_code"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f'"{expected}" <utf8_string>' in result.stdout


# --- the committed sample ----------------------------------------------------------------------


def test_committed_sample_matches_its_csv() -> None:
    """geodb/sample.mmdb must be rebuilt whenever geodb/sample.csv changes."""
    rows = [
        line.split(",")
        for line in (REPO / "geodb" / "sample.csv").read_text().splitlines()
        if line and not line.startswith(("#", "network,"))
    ]
    assert rows
    sample = REPO / "geodb" / "sample.mmdb"
    clf = Classifier([sample])
    for network, country, continent in rows:
        net = ipaddress.ip_network(network)
        for address in (net[0], net[-1]):
            assert clf.locate(str(address)) == Location(continent, country, None, net.prefixlen, f"mmdb:{sample}")
