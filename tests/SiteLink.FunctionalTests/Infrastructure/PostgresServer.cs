using System.Globalization;
using Npgsql;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A real PostgreSQL server (Debian's packages) in a temporary folder on a loopback port: initdb, then postgres in the
/// foreground, stopped and deleted on dispose; no system service assumed. As root (where PostgreSQL refuses to run)
/// both run as the package's <c>postgres</c> user. Without PostgreSQL the test is skipped with how to install it,
/// unless SITELINK_REQUIRE_REAL_SERVERS=1 (as .ci/run sets, after installing it), where it fails.
/// </summary>
internal sealed class PostgresServer : IAsyncDisposable
{
    private readonly ProcessRunner _process;
    private readonly string _folder;
    private int _databases;

    private PostgresServer(ProcessRunner process, string folder, int port)
    {
        _process = process;
        _folder = folder;
        Port = port;
    }

    public int Port { get; }

    /// <summary>The server's own database (for creating others).</summary>
    public string AdminConnectionString => ConnectionString("postgres");

    public string ConnectionString(string database) =>
        $"Host=127.0.0.1;Port={Port.ToString(CultureInfo.InvariantCulture)};Username=sitelink;Database={database};Timeout=10;Command Timeout=30";

    public static async Task<PostgresServer> StartAsync()
    {
        var bin = FindBinaries();
        if (bin is null)
        {
            RealServers.Missing("PostgreSQL is not installed (sudo apt-get install postgresql; .ci/run installs it).");
        }

        var asRoot = Environment.UserName == "root" || Environment.GetEnvironmentVariable("USER") == "root" || geteuid() == 0;
        var folder = Directory.CreateTempSubdirectory("sitelink-pg-").FullName;
        var data = Path.Combine(folder, "data");
        if (asRoot)
        {
            await RunAsync("chown", ["-R", "postgres", folder]);
        }

        await RunAsync(Wrap(asRoot, Path.Combine(bin!, "initdb")), [.. Prefix(asRoot, Path.Combine(bin!, "initdb")), "-D", data, "-U", "sitelink", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
        for (var attempt = 1; ; attempt++)
        {
            var port = RealServers.FreePort();
            var postgres = Path.Combine(bin!, "postgres");
            var process = ProcessRunner.Start(Wrap(asRoot, postgres),
                [.. Prefix(asRoot, postgres), "-D", data, "-h", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture), "-k", folder, "-F", "-c", "max_connections=200"]);
            try
            {
                await process.WaitForLineAsync("database system is ready to accept connections", TimeSpan.FromSeconds(30));
                return new PostgresServer(process, folder, port);
            }
            catch (AssertionException) when (attempt < 3)
            {
                await process.DisposeAsync();
            }
        }
    }

    /// <summary>A new, empty database on this server; returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        var name = "t" + Interlocked.Increment(ref _databases).ToString(CultureInfo.InvariantCulture) + "_" + Guid.NewGuid().ToString("N")[..8];
        await using var connection = new NpgsqlConnection(AdminConnectionString);
        await connection.OpenAsync().DefaultTimeout();
        await using var command = new NpgsqlCommand($"CREATE DATABASE {name}", connection);
        await command.ExecuteNonQueryAsync().DefaultTimeout();
        return ConnectionString(name);
    }

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await _process.DisposeAsync();
        try
        {
            Directory.Delete(_folder, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static string? FindBinaries()
    {
        var versions = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").OrderByDescending(d => int.TryParse(Path.GetFileName(d), out var v) ? v : 0)
            : Enumerable.Empty<string>();
        return versions.Select(v => Path.Combine(v, "bin")).FirstOrDefault(b => File.Exists(Path.Combine(b, "initdb")));
    }

    private static string Wrap(bool asRoot, string program) => asRoot ? "runuser" : program;

    private static string[] Prefix(bool asRoot, string program) => asRoot ? ["-u", "postgres", "--", program] : [];

    private static async Task RunAsync(string program, string[] arguments)
    {
        await using var process = ProcessRunner.Start(program, arguments);
        var exit = await process.WaitForExitAsync(TimeSpan.FromSeconds(60));
        if (exit != 0)
        {
            Assert.Fail($"{program} {string.Join(' ', arguments)} exited with {exit}: {string.Join('\n', process.Errors.TakeLast(10))}");
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = false)]
    private static extern uint geteuid();
}
