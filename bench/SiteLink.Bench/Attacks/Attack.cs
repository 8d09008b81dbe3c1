namespace SiteLink.Bench.Attacks;

/// <summary>
/// The hostile clients of bench/hostile.py. Each runs for a bounded time, then prints one line "RESULT {json}" that
/// says what the relay did to it. Every socket is bound to <c>--source</c> (default 127.0.0.2), another loopback
/// address than the good agent's, so per-address limits of the relay are measured as they would be across hosts.
/// </summary>
internal static class Attack
{
    public static async Task<int> RunAsync(string name, IEnumerable<string> args)
    {
        var options = AttackOptions.Parse(args);
        return name switch
        {
            "control-no-read" => await ControlAttacks.NoReadAsync(options),
            "unbind-big" => await ControlAttacks.UnbindBigAsync(options),
            "pending-hellos" => await ControlAttacks.PendingHellosAsync(options),
            "auth-fail" => await ControlAttacks.AuthFailAsync(options),
            "parked-data" => await StreamAttacks.ParkedDataAsync(options),
            "parked-reset-leak" => await StreamAttacks.ParkedResetLeakAsync(options),
            "silent-public" => await SocketAttacks.SilentPublicAsync(options),
            "idle-tls" => await SocketAttacks.IdleTlsAsync(options),
            "rapid-reset" => await SocketAttacks.RapidResetAsync(options),
            _ => throw new ArgumentException($"unknown attack '{name}'"),
        };
    }
}
