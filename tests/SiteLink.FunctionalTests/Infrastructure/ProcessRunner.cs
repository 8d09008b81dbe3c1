using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;

namespace SiteLink.FunctionalTests.Infrastructure;

/// <summary>
/// A program of this repository run as its own process, as an operator or a service manager runs it: the built
/// relay or sitelink-agent (<c>dotnet &lt;dll&gt;</c>), or a shell command line from the README. Output is captured
/// line by line; every wait has a deadline; disposing kills the whole process tree.
/// </summary>
internal sealed class ProcessRunner : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _stdout = new();
    private readonly ConcurrentQueue<string> _stderr = new();
    private readonly SemaphoreSlim _lineArrived = new(0);
    private readonly TaskCompletionSource _outputClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _streamsOpen = 2;

    private ProcessRunner(ProcessStartInfo start)
    {
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.UseShellExecute = false;
        // Children of `dotnet test` inherit its MSBuild and test-host variables; a nested `dotnet run` must not.
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(key);
        }

        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        _process = new Process { StartInfo = start, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => OnLine(_stdout, e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(_stderr, e.Data);
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>The repository's root (where SiteLink.Sdk.sln is).</summary>
    public static string RepositoryRoot { get; } = FindRoot();

    /// <summary>The build configuration of this test assembly (Release under CI), which the binaries were built with.</summary>
    public static string Configuration { get; } =
        typeof(ProcessRunner).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";

    public static string RelayDll => Binary("src/SiteLink.Relay", "SiteLink.Relay.dll");

    public static string AgentDll => Binary("samples/ConsoleAgent", "sitelink-agent.dll");

    public static string HostedAgentDll => Binary("samples/HostedAgent", "HostedAgent.dll");

    public static string QuickstartDll => Binary("samples/Quickstart", "Quickstart.dll");

    public IReadOnlyCollection<string> Output => _stdout;

    public IReadOnlyCollection<string> Errors => _stderr;

    public string AllOutput => string.Join(Environment.NewLine, _stdout.Concat(_stderr));

    public bool HasExited => _process.HasExited;

    /// <summary>Runs <c>dotnet <paramref name="dll"/> args…</c> in <paramref name="workingDirectory"/>.</summary>
    public static ProcessRunner Dotnet(string dll, IEnumerable<string> args, string? workingDirectory = null, IDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory ?? Path.GetTempPath() };
        start.ArgumentList.Add(dll);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return Start(start, environment);
    }

    /// <summary>Runs an executable (e.g. a server from Debian's packages) with <paramref name="args"/>.</summary>
    public static ProcessRunner Start(string executable, IEnumerable<string> args, string? workingDirectory = null, IDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(executable) { WorkingDirectory = workingDirectory ?? Path.GetTempPath() };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return Start(start, environment);
    }

    /// <summary>Runs a shell command line with bash, as a user would paste it, in <paramref name="workingDirectory"/>.</summary>
    public static ProcessRunner Bash(string commandLine, string workingDirectory, IDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo("bash") { WorkingDirectory = workingDirectory };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(commandLine);
        return Start(start, environment);
    }

    /// <summary>Waits for an output line (stdout or stderr) matching <paramref name="pattern"/>; fails with the output so far.</summary>
    public async Task<Match> WaitForLineAsync(string pattern, TimeSpan timeout)
    {
        var regex = new Regex(pattern, RegexOptions.CultureInvariant);
        using var deadline = new CancellationTokenSource(timeout);
        while (true)
        {
            foreach (var line in _stdout.Concat(_stderr))
            {
                if (regex.Match(line) is { Success: true } match)
                {
                    return match;
                }
            }

            if (_outputClosed.Task.IsCompleted)
            {
                Assert.Fail($"The process exited (code {ExitCodeOrNull()}) without printing /{pattern}/. Output:{Environment.NewLine}{AllOutput}");
            }

            try
            {
                await _lineArrived.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"No output line matched /{pattern}/ within {timeout}. Output so far:{Environment.NewLine}{AllOutput}");
            }
        }
    }

    /// <summary>Waits for the process to exit by itself and returns its exit code; fails (and kills it) after <paramref name="timeout"/>.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(deadline.Token);
            await _outputClosed.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (OperationCanceledException)
        {
            Kill();
            Assert.Fail($"The process did not exit within {timeout}. Output:{Environment.NewLine}{AllOutput}");
        }

        return _process.ExitCode;
    }

    /// <summary>Sends SIGTERM, as systemd's stop does, and returns the exit code.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        if (!_process.HasExited)
        {
            using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) } });
            await kill!.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }

        return await WaitForExitAsync(timeout);
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        _process.Dispose();
        // Not disposed: output still in flight from a killed process may signal it after this (it holds no handle).
        return ValueTask.CompletedTask;
    }

    private static ProcessRunner Start(ProcessStartInfo start, IDictionary<string, string>? environment)
    {
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        return new ProcessRunner(start);
    }

    private void OnLine(ConcurrentQueue<string> lines, string? line)
    {
        if (line is null)
        {
            if (Interlocked.Decrement(ref _streamsOpen) == 0)
            {
                _outputClosed.TrySetResult();
                _lineArrived.Release();
            }

            return;
        }

        lines.Enqueue(line);
        if (Environment.GetEnvironmentVariable("SITELINK_TEST_LOGS") == "1")
        {
            TestContext.Progress.WriteLine($"[{_process.Id}] {line}");
        }

        _lineArrived.Release();
    }

    private void Kill()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }

    private int? ExitCodeOrNull() => _process.HasExited ? _process.ExitCode : null;

    private static string Binary(string project, string dll)
    {
        var path = Path.Combine(RepositoryRoot, project, "bin", Configuration, "net10.0", dll);
        Assert.That(File.Exists(path), Is.True, $"{path} is not built; build the solution first (dotnet build SiteLink.Sdk.sln -c {Configuration}).");
        return path;
    }

    private static string FindRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "SiteLink.Sdk.sln")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException("SiteLink.Sdk.sln not found above " + AppContext.BaseDirectory);
    }
}
