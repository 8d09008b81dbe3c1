// Helpers for bench/run.sh: every process the harness needs that no Debian package provides.
//   free-ports N                          print N free loopback ports
//   echo-server PORT                      echo every byte (for the idle-connections scenario)
//   delay-proxy LISTEN_PORT TARGET_PORT MS  forward to 127.0.0.1:TARGET, delaying each direction by MS (a WAN link)
//   idle TARGET_PORT COUNT SECONDS[:CLOSED_SECONDS] PID...
//                                         open COUNT idle connections, report the PIDs' RSS SECONDS later, check each
//                                         still carries a byte, close them all, report the RSS again CLOSED_SECONDS
//                                         later (default: SECONDS)
//   attack NAME --key value ...           a hostile agent or client against a relay (bench/hostile.py); prints "RESULT {json}"
//   jwt JWKS_FILE ISSUER AUDIENCE         write a new RSA key's JWKS document to JWKS_FILE, print a token it signed (valid 2 h)
//   sessions RELAY_URL PIN TOKEN FIRST COUNT
//                                         COUNT agent sessions, session i binding the echo endpoint d{i} (bench/density.py)
//   aspnet-app RELAY_URL PIN TOKEN PORT   a minimal API over SiteLink.AspNetCore (endpoint aspnet-transport) and on
//                                         127.0.0.1:PORT, which the same session forwards (endpoint aspnet-forward)
//   grpc-pipe-server PORT                 bare gRPC over HTTP/2 + TLS with the relay's Kestrel settings (GrpcPipe.cs);
//                                         prints "grpc-pipe-server listening PORT pin SHA256"
//   grpc-pipe-client PORT PIN DIRECTION SECONDS [WARM_UP_SECONDS]
//                                         one call of 64 KiB messages one way (server-to-client or client-to-server)
//                                         with the SDK's handler settings; prints the receiver's bytes/s
//   churn TARGET_PORT TOTAL CONCURRENCY BYTES CHECKPOINT SETTLE_SECONDS PID...
//                                         TOTAL short connections (send BYTES random bytes, read them back, compare,
//                                         close), CONCURRENCY at once; every CHECKPOINT connections: none open, wait
//                                         SETTLE_SECONDS, print the PIDs' RSS (bench/churn.py)
using System.Net;
using System.Net.Sockets;
using SiteLink.Bench;

return args.FirstOrDefault() switch
{
    "free-ports" => FreePorts(int.Parse(args[1])),
    "echo-server" => await EchoServer.RunAsync(int.Parse(args[1]), args.Length > 2 && args[2] == "stats"),
    "delay-proxy" => await DelayProxy.RunAsync(int.Parse(args[1]), int.Parse(args[2]), TimeSpan.FromMilliseconds(double.Parse(args[3]))),
    "idle" => await IdleConnections.RunAsync(int.Parse(args[1]), int.Parse(args[2]),
        TimeSpan.FromSeconds(double.Parse(args[3].Split(':')[0])), TimeSpan.FromSeconds(double.Parse(args[3].Split(':')[^1])),
        args.Skip(4).Select(int.Parse).ToArray()),
    "attack" when args.Length > 1 => await SiteLink.Bench.Attacks.Attack.RunAsync(args[1], args.Skip(2)),
    "jwt" when args.Length == 4 => Jwt(args[1], args[2], args[3]),
    "sessions" when args.Length == 6 => await AgentSessions.RunAsync(new Uri(args[1]), args[2], args[3], int.Parse(args[4]), int.Parse(args[5])),
    "aspnet-app" when args.Length == 5 => await AspNetCoreApp.RunAsync(new Uri(args[1]), args[2], args[3], int.Parse(args[4])),
    "grpc-pipe-server" when args.Length == 2 => await GrpcPipe.ServeAsync(int.Parse(args[1])),
    "grpc-pipe-client" when args.Length is 5 or 6 => await GrpcPipe.ClientAsync(int.Parse(args[1]), args[2], args[3],
        double.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture),
        args.Length == 6 ? double.Parse(args[5], System.Globalization.CultureInfo.InvariantCulture) : 1),
    "churn" when args.Length >= 7 => await Churn.RunAsync(int.Parse(args[1]), int.Parse(args[2]), int.Parse(args[3]), int.Parse(args[4]),
        int.Parse(args[5]), TimeSpan.FromSeconds(double.Parse(args[6], System.Globalization.CultureInfo.InvariantCulture)), args.Skip(7).Select(int.Parse).ToArray()),
    _ => Usage(),
};

static int Jwt(string jwksFile, string issuer, string audience)
{
    var key = new Microsoft.IdentityModel.Tokens.RsaSecurityKey(System.Security.Cryptography.RSA.Create(2048)) { KeyId = "bench" };
    var jwk = Microsoft.IdentityModel.Tokens.JsonWebKeyConverter.ConvertFromRSASecurityKey(key);
    File.WriteAllText(jwksFile, System.Text.Json.JsonSerializer.Serialize(new { keys = new[] { new { kty = "RSA", use = "sig", alg = "RS256", kid = jwk.KeyId, n = jwk.N, e = jwk.E } } }));
    Console.WriteLine(new Microsoft.IdentityModel.JsonWebTokens.JsonWebTokenHandler().CreateToken(new Microsoft.IdentityModel.Tokens.SecurityTokenDescriptor
    {
        Issuer = issuer,
        Audience = audience,
        Subject = new System.Security.Claims.ClaimsIdentity([new System.Security.Claims.Claim("sub", "bench")]),
        Expires = DateTime.UtcNow.AddHours(2),
        SigningCredentials = new Microsoft.IdentityModel.Tokens.SigningCredentials(key, Microsoft.IdentityModel.Tokens.SecurityAlgorithms.RsaSha256),
    }));
    return 0;
}

static int FreePorts(int count)
{
    var sockets = new List<Socket>();
    for (var i = 0; i < count; i++)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        sockets.Add(socket);
        Console.WriteLine(((IPEndPoint)socket.LocalEndPoint!).Port);
    }

    sockets.ForEach(s => s.Dispose());
    return 0;
}

static int Usage()
{
    Console.Error.WriteLine("usage: free-ports N | echo-server PORT | delay-proxy LISTEN TARGET MS | idle TARGET COUNT SECONDS[:CLOSED_SECONDS] PID... | attack NAME --key value ... | grpc-pipe-server PORT | grpc-pipe-client PORT PIN DIRECTION SECONDS [WARM_UP] | churn TARGET TOTAL CONCURRENCY BYTES CHECKPOINT SETTLE PID...");
    return 2;
}
