-- docker-compose.yml, profile "postgres": a database for the node next to Orthanc's.
-- The role shares POSTGRES_PASSWORD (set in the environment of the postgres service).
CREATE DATABASE dicomnode OWNER orthanc;
