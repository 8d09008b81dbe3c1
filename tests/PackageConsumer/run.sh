#!/usr/bin/env bash
# Packs SiteLink.Sdk and SiteLink.AspNetCore, checks what the packages hold, then builds and runs tests/PackageConsumer
# against them from a local folder feed, for net8.0 and net10.0 (the net8.0 build runs on the newest installed runtime when .NET 8 is not
# installed: it still loads the package's lib/net8.0 assembly and its net8.0 dependencies).
# Needs the Release build of the solution (for the relay the consumer talks to). Exit code 0 when all is well.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
feed="$work/feed"

echo "-- pack (Release, CI-deterministic paths)"
# A version of its own (the project's, with a local pre-release tag): the restore below can only find this package,
# never a cached or public SiteLink.Sdk of the same number.
base_version="$(sed -n 's|.*<Version>\(.*\)</Version>.*|\1|p' "$root/src/SiteLink.Sdk/SiteLink.Sdk.csproj")"
local_version="$base_version-local.$(date +%s)"
dotnet pack "$root/src/SiteLink.Sdk" -c Release -o "$feed" -p:ContinuousIntegrationBuild=true -p:PackageVersion="$local_version" --nologo -v q
nupkg="$(ls "$feed"/SiteLink.Sdk.*.nupkg | grep -v snupkg)"
snupkg="$(ls "$feed"/SiteLink.Sdk.*.snupkg)"
version="$(basename "$nupkg" .nupkg)"; version="${version#SiteLink.Sdk.}"
echo "$(basename "$nupkg") ($(stat -c %s "$nupkg") bytes), $(basename "$snupkg") ($(stat -c %s "$snupkg") bytes)"

echo "-- package contents"
python3 - "$nupkg" "$snupkg" <<'PY'
import re, sys, zipfile
nupkg, snupkg = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2])
names = set(nupkg.namelist())
problems = []
for needed in ["README.md", "icon.png", "lib/net8.0/SiteLink.Sdk.dll", "lib/net8.0/SiteLink.Sdk.xml",
               "lib/net10.0/SiteLink.Sdk.dll", "lib/net10.0/SiteLink.Sdk.xml"]:
    if needed not in names:
        problems.append(f"missing {needed}")
for pdb in ["lib/net8.0/SiteLink.Sdk.pdb", "lib/net10.0/SiteLink.Sdk.pdb"]:
    if pdb not in snupkg.namelist():
        problems.append(f"symbols package lacks {pdb}")
nuspec = nupkg.read("SiteLink.Sdk.nuspec").decode()
for tag in ["<license type=\"expression\">MIT</license>", "<icon>icon.png</icon>", "<readme>README.md</readme>", "<tags>", "<repository "]:
    if tag not in nuspec:
        problems.append(f"nuspec lacks {tag}")
net8 = nuspec.split('targetFramework="net8.0"')[1].split("</group>")[0]
for dep in re.findall(r'id="(Microsoft\.Extensions\.[^"]+)" version="([^"]+)"', net8):
    if not dep[1].startswith("8."):
        problems.append(f"net8.0 depends on {dep[0]} {dep[1]} (must be 8.x)")
readme = nupkg.read("README.md").decode()
if re.search(r"\]\((?!https?://)[^)]+\)", readme):
    problems.append("README.md links into the repository (relative link)")
for tfm in ["net8.0", "net10.0"]:
    doc = nupkg.read(f"lib/{tfm}/SiteLink.Sdk.xml").decode()
    leaked = sorted(set(re.findall(r'name="[A-Z]:SiteLink\.(Protocol|Internal|Bridging|Endpoints|Diagnostics|Hosting|Resilience|Security)\.', doc)))
    if leaked:
        problems.append(f"{tfm} XML docs describe internals: {leaked}")
    if 'name="T:SiteLink.TunnelSession"' not in doc:
        problems.append(f"{tfm} XML docs lack the public API")
for info in sorted(nupkg.infolist(), key=lambda i: i.filename):
    print(f"  {info.file_size:>8}  {info.filename}")
if problems:
    print("PACKAGE PROBLEMS:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("package contents OK")
PY

echo "-- SiteLink.AspNetCore package (same version; depends on SiteLink.Sdk of that version)"
dotnet pack "$root/src/SiteLink.AspNetCore" -c Release -o "$feed" -p:ContinuousIntegrationBuild=true -p:PackageVersion="$version" --nologo -v q
python3 - "$feed/SiteLink.AspNetCore.$version.nupkg" "$feed/SiteLink.AspNetCore.$version.snupkg" "$version" <<'PY'
import re, sys, zipfile
nupkg, snupkg, version = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2]), sys.argv[3]
names, problems = set(nupkg.namelist()), []
for tfm in ["net8.0", "net10.0"]:
    for needed in [f"lib/{tfm}/SiteLink.AspNetCore.dll", f"lib/{tfm}/SiteLink.AspNetCore.xml"]:
        if needed not in names:
            problems.append(f"missing {needed}")
    if f"lib/{tfm}/SiteLink.AspNetCore.pdb" not in snupkg.namelist():
        problems.append(f"symbols package lacks lib/{tfm}/SiteLink.AspNetCore.pdb")
    doc = nupkg.read(f"lib/{tfm}/SiteLink.AspNetCore.xml").decode()
    if "SiteLink.AspNetCore.Transport." in doc:
        problems.append(f"{tfm} XML docs describe internals")
for needed in ["README.md", "icon.png"]:
    if needed not in names:
        problems.append(f"missing {needed}")
nuspec = nupkg.read("SiteLink.AspNetCore.nuspec").decode()
for tfm in ["net8.0", "net10.0"]:
    group = nuspec.split(f'targetFramework="{tfm}"')[1].split("</group>")[0]
    if f'id="SiteLink.Sdk" version="[{version}]"' not in group and f'id="SiteLink.Sdk" version="{version}"' not in group:
        problems.append(f"{tfm} does not depend on SiteLink.Sdk {version}")
if 'frameworkReference name="Microsoft.AspNetCore.App"' not in nuspec:
    problems.append("nuspec lacks the Microsoft.AspNetCore.App framework reference")
for tag in ["<license type=\"expression\">MIT</license>", "<icon>icon.png</icon>", "<readme>README.md</readme>"]:
    if tag not in nuspec:
        problems.append(f"nuspec lacks {tag}")
if re.search(r"\]\((?!https?://)[^)]+\)", nupkg.read("README.md").decode()):
    problems.append("README.md links into the repository (relative link)")
if problems:
    print("PACKAGE PROBLEMS (SiteLink.AspNetCore):\n  " + "\n  ".join(problems))
    sys.exit(1)
print("SiteLink.AspNetCore package contents OK")
PY

echo "-- Source Link (a clone of HEAD whose origin is a GitHub URL, as on a release build machine)"
git clone -q "$root" "$work/clone"
git -C "$work/clone" remote set-url origin https://github.com/sitelink-example/sitelink.git
commit="$(git -C "$work/clone" rev-parse HEAD)"
dotnet pack "$work/clone/src/SiteLink.Sdk" -c Release -o "$work/linked" -p:ContinuousIntegrationBuild=true -p:PackageVersion="$version" --nologo -v q
python3 - "$work/linked/SiteLink.Sdk.$version.snupkg" "$work/linked/SiteLink.Sdk.$version.nupkg" "$commit" <<'PY'
import re, sys, zipfile
snupkg, nupkg, commit = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2]), sys.argv[3]
expected = f'"/_/*":"https://raw.githubusercontent.com/sitelink-example/sitelink/{commit}/*"'
problems = []
for tfm in ["net8.0", "net10.0"]:
    pdb = snupkg.read(f"lib/{tfm}/SiteLink.Sdk.pdb")
    if expected.encode() not in pdb:
        problems.append(f"{tfm} PDB has no Source Link map to the commit ({expected})")
    if b"/tmp/" in pdb or b"/home/" in pdb:
        problems.append(f"{tfm} PDB holds build-machine paths (not deterministic)")
nuspec = nupkg.read("SiteLink.Sdk.nuspec").decode()
if f'url="https://github.com/sitelink-example/sitelink.git"' not in nuspec or f'commit="{commit}"' not in nuspec:
    problems.append("nuspec lacks the repository URL and commit")
if problems:
    print("SOURCE LINK PROBLEMS:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"Source Link OK: /_/* -> raw.githubusercontent.com/.../{commit[:12]}/*, deterministic paths, repository in the nuspec")
PY

echo "-- consumer (restores SiteLink.Sdk and SiteLink.AspNetCore $version from the folder feed)"
consumer="$work/consumer"
mkdir -p "$consumer"
cp "$root/tests/PackageConsumer/PackageConsumer.csproj" "$root/tests/PackageConsumer/Program.cs" "$consumer/"
# Only a local folder is added; every other package comes from the sources the machine is configured with.
cat > "$consumer/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="sitelink-local-feed" value="$feed" />
  </packageSources>
</configuration>
XML
relay_dll="$root/src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll"
[ -f "$relay_dll" ] || { echo "build the solution first (dotnet build SiteLink.Sdk.sln -c Release): $relay_dll is missing" >&2; exit 1; }
dotnet restore "$consumer/PackageConsumer.csproj" -p:SiteLinkSdkVersion="$version" --nologo -v q
for tfm in net8.0 net10.0; do
  echo "-- consumer on $tfm"
  dotnet build "$consumer/PackageConsumer.csproj" -c Release -f "$tfm" --no-restore -p:SiteLinkSdkVersion="$version" --nologo -v q
  DOTNET_ROLL_FORWARD=Major timeout 300 dotnet "$consumer/bin/Release/$tfm/PackageConsumer.dll" --relay-dll "$relay_dll"
done
echo "package consumer OK"
