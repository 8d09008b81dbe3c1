using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace SiteLink.Relay.Policy;

/// <summary>
/// A salted password hash for basic-auth rules: <c>pbkdf2-sha256$ITERATIONS$SALT$HASH</c> (salt and hash in base64),
/// PBKDF2 with HMAC-SHA256. Configuration holds only this, never a password; checks compare in constant time.
/// </summary>
internal sealed class PasswordHash
{
    private const string Scheme = "pbkdf2-sha256";

    /// <summary>Iterations <see cref="Create"/> uses (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).</summary>
    public const int DefaultIterations = 600_000;

    private readonly int _iterations;
    private readonly byte[] _salt;
    private readonly byte[] _hash;

    private PasswordHash(int iterations, byte[] salt, byte[] hash)
    {
        _iterations = iterations;
        _salt = salt;
        _hash = hash;
    }

    /// <summary>The PBKDF2 iterations of this hash.</summary>
    public int Iterations => _iterations;

    public static PasswordHash Create(string password, int iterations = DefaultIterations)
    {
        var salt = RandomNumberGenerator.GetBytes(16);
        return new PasswordHash(iterations, salt, Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, 32));
    }

    public static bool TryParse(string? text, out PasswordHash hash, out string problem)
    {
        hash = null!;
        problem = $"is not {Scheme}$ITERATIONS$SALT$HASH (make one with: SiteLink.Relay --hash-password).";
        var parts = (text ?? "").Split('$');
        if (parts.Length != 4 || parts[0] != Scheme || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var iterations))
        {
            return false;
        }

        if (iterations is < 10_000 or > 10_000_000)
        {
            problem = "must use 10,000 to 10,000,000 iterations.";
            return false;
        }

        try
        {
            var salt = Convert.FromBase64String(parts[2]);
            var digest = Convert.FromBase64String(parts[3]);
            if (salt.Length < 8 || digest.Length is < 16 or > 64)
            {
                problem = "needs a salt of at least 8 bytes and a hash of 16 to 64 bytes.";
                return false;
            }

            hash = new PasswordHash(iterations, salt, digest);
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }

    public bool Verify(string password)
    {
        var candidate = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), _salt, _iterations, HashAlgorithmName.SHA256, _hash.Length);
        return CryptographicOperations.FixedTimeEquals(candidate, _hash);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Scheme}${_iterations}${Convert.ToBase64String(_salt)}${Convert.ToBase64String(_hash)}");
}
