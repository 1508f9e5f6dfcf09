// Package sqldb opens Junction's SQL database: SQLite in the data dir by
// default (modernc.org/sqlite, no cgo) or PostgreSQL (pgx) by DSN; and,
// for pipelines that read or write them, MySQL and MariaDB
// (mysql://user:pass@tcp(host:port)/db).
package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	_ "modernc.org/sqlite"             // registers "sqlite"
)

// DB is an open database with its dialect.
type DB struct {
	*sql.DB
	Dialect string // sqlite, postgres or mysql
}

// Open opens dsn, or SQLite at dataDir/junction.db when dsn is empty.
func Open(ctx context.Context, dsn, dataDir string) (*DB, error) {
	driver, conn, dialect := "sqlite", "", "sqlite"
	switch {
	case dsn == "":
		conn = filepath.Join(dataDir, "junction.db")
	case strings.HasPrefix(dsn, "sqlite:"):
		conn = strings.TrimPrefix(dsn, "sqlite:")
	case strings.HasPrefix(dsn, "mysql://") || strings.HasPrefix(dsn, "mariadb://"):
		c, err := mysqlConfig(dsn)
		if err != nil {
			return nil, err
		}
		driver, conn, dialect = "mysql", c, "mysql"
	default:
		driver, conn, dialect = "pgx", dsn, "postgres"
	}
	if dialect == "sqlite" {
		// WAL lets readers run beside the writer; busy_timeout turns lock
		// contention into waiting instead of SQLITE_BUSY errors. Write
		// transactions that read first (projections read their
		// checkpoint) take the write lock at BEGIN (_txlock=immediate):
		// upgrading a read snapshot later fails at once, without waiting,
		// when another writer committed in between.
		conn = "file:" + conn + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)&_txlock=immediate"
	}
	db, err := sql.Open(driver, conn)
	if err != nil {
		return nil, fmt.Errorf("opening %s database: %w", dialect, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to %s database: %w", dialect, err)
	}
	return &DB{DB: db, Dialect: dialect}, nil
}

// Ready checks the database answers a query.
func (d *DB) Ready(ctx context.Context) error {
	var one int
	return d.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// mysqlConfig turns mysql://user:pass@tcp(host:port)/db?params (or
// mariadb://...) into the driver's DSN, with times parsed into time.Time
// and kept in UTC.
func mysqlConfig(dsn string) (string, error) {
	rest := dsn[strings.Index(dsn, "://")+3:]
	c, err := mysql.ParseDSN(rest)
	if err != nil {
		return "", fmt.Errorf("mysql dsn: %w", err)
	}
	c.ParseTime = true
	return c.FormatDSN(), nil
}
